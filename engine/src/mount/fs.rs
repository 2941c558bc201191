//! The FUSE file system: each kernel request becomes one data-protocol call
//! (namespace calls by inode, reads and writes by inode), answered with the
//! attributes the appliance returned.
//!
//! - **Inodes** are the engine's own numbers (stable across remounts and
//!   restarts), but for the root, which FUSE calls 1. Nothing is kept per
//!   inode: the kernel's `forget` has nothing to drop, and an NFS re-export
//!   can look any inode up by number again (`.` and `..` lookups).
//! - **Caches**: entries and attributes live `entry_timeout` and
//!   `attr_timeout` in the kernel; changes made through this mount update
//!   them there. An `open` asks the appliance for the file's attributes and,
//!   when another client changed it since this mount last saw it, drops the
//!   kernel's cached attributes and pages (close-to-open consistency).
//! - **Writes** go through (no write-back cache): a `write` returns when the
//!   appliance acknowledged it, which on a durable file system means it is
//!   durable; `fsync` makes a write-back file system's changes durable.
//! - **Locks** (`flock`, `fcntl`) are the kernel's, within this mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::lanes::Lanes;
use super::snapshots::SNAPDIR;
use crate::codec::Reader;
use crate::meta::snap::is_view;
use crate::net::ns::{self, NsAttr, NsCall, NsEntry, NsStatFs, SetAttrs};
use crate::net::wire::{self, Request as Wire};

/// Largest read or write the mount asks the kernel for (FUSE's 256 pages).
pub const MAX_IO: u32 = 1 << 20;

/// The most the kernel reads ahead of a sequential reader.
pub const READAHEAD: u32 = 8 << 20;

/// How long the kernel may keep what the mount told it.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Attributes.
    pub attr: Duration,
    /// Names (positive entries).
    pub entry: Duration,
}

/// What the mount last told the kernel of a file's contents.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: i64,
}

/// Files the mount told the kernel about, at most (then it forgets them
/// all and the next open of each drops its cached pages once).
const SEEN_MAX: usize = 1 << 20;

/// A directory being listed: the page read from the appliance, by the
/// offset each entry carries in the kernel's listing.
#[derive(Default)]
struct Listing {
    /// The offset the page was read after.
    from: Option<u64>,
    /// The page holds each entry's attributes.
    plus: bool,
    /// Entries and their offsets.
    page: Vec<(u64, NsEntry)>,
    /// No entries after the page.
    end: bool,
}

/// The file system a mount serves.
pub struct FlintFs {
    lanes: Arc<Lanes>,
    root: u64,
    ttl: Timeouts,
    read_only: bool,
    writeback_cache: bool,
    seen: Mutex<HashMap<u64, Seen>>,
    dirs: Mutex<HashMap<u64, Arc<Mutex<Listing>>>>,
    next_fh: std::sync::atomic::AtomicU64,
    notifier: Arc<OnceLock<Notifier>>,
    /// Files open through this mount, by engine inode: how many times.
    open: Mutex<HashMap<u64, u32>>,
    /// Files unlinked while open here: their name in the orphan directory.
    orphans: Mutex<HashMap<u64, Vec<u8>>>,
    /// The orphan directory's inode, once made.
    orphan_dir: OnceLock<u64>,
}

/// The root's hidden directory where a file unlinked while open through a
/// mount waits for its last close (the kernel client's "silly rename", as
/// NFS does). Neither listed nor looked up through the mount.
pub const ORPHANS: &[u8] = b".flint-orphans";

fn errno(code: i32) -> Errno {
    Errno::from_i32(if code < 0 { -code } else { libc::EIO })
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn nanos_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn nanos_or_now(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => nanos_of(t),
        TimeOrNow::Now => nanos_of(SystemTime::now()),
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

impl FlintFs {
    /// A file system over `lanes` whose root directory is `root`.
    pub fn new(
        lanes: Arc<Lanes>,
        root: u64,
        ttl: Timeouts,
        read_only: bool,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> FlintFs {
        FlintFs {
            lanes,
            root,
            ttl,
            read_only,
            writeback_cache: false,
            seen: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: std::sync::atomic::AtomicU64::new(1),
            notifier,
            open: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            orphan_dir: OnceLock::new(),
        }
    }

    /// Lets the kernel keep written pages and send them later, in
    /// parallel (FUSE's write-back cache): a `write` returns before the
    /// appliance holds it, and `fsync` or the last `close` is where it is
    /// durable, as on a local file system.
    pub fn with_writeback_cache(mut self, on: bool) -> FlintFs {
        self.writeback_cache = on;
        self
    }

    /// The engine's number of the root directory.
    pub(super) fn root_ino(&self) -> u64 {
        self.root
    }

    /// A namespace call's reply body.
    pub(super) fn ns_call(&self, req: &Request, call: NsCall) -> Result<Vec<u8>, Errno> {
        self.ns(req, call)
    }

    /// An inode's attributes, not noted as seen.
    pub(super) fn live_attr(&self, req: &Request, ino: u64) -> Result<NsAttr, Errno> {
        self.attr_call_quiet(req, ino)
    }

    /// The engine's number for a FUSE inode.
    pub(super) fn eng(&self, ino: INodeNo) -> u64 {
        if ino == INodeNo::ROOT {
            self.root
        } else {
            ino.0
        }
    }

    /// The FUSE number for an engine inode.
    fn fuse(&self, ino: u64) -> INodeNo {
        if ino == self.root {
            INodeNo::ROOT
        } else {
            INodeNo(ino)
        }
    }

    fn file_attr(&self, a: &NsAttr) -> FileAttr {
        FileAttr {
            ino: self.fuse(a.ino),
            size: a.size,
            blocks: a.blocks * 8,
            atime: time_of(a.atime),
            mtime: time_of(a.mtime),
            ctime: time_of(a.ctime),
            crtime: time_of(a.ctime),
            kind: kind_of(a.mode),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: MAX_IO,
            flags: 0,
        }
    }

    /// Notes what the kernel is told of a regular file.
    fn saw(&self, a: &NsAttr) {
        if a.mode & libc::S_IFMT != libc::S_IFREG {
            return;
        }
        if let Ok(mut m) = self.seen.lock() {
            if m.len() >= SEEN_MAX {
                m.clear();
            }
            m.insert(
                a.ino,
                Seen {
                    size: a.size,
                    mtime: a.mtime,
                },
            );
        }
    }

    fn ns(&self, req: &Request, call: NsCall) -> Result<Vec<u8>, Errno> {
        self.lanes.ns(req.uid(), req.gid(), call).map_err(errno)
    }

    fn attr_call(&self, req: &Request, call: NsCall) -> Result<NsAttr, Errno> {
        let body = self.ns(req, call)?;
        let a = NsAttr::from_body(&body).map_err(|_| Errno::EPROTO)?;
        self.saw(&a);
        Ok(a)
    }

    fn reply_entry(&self, r: Result<NsAttr, Errno>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(
                &self.ttl.entry,
                &self.file_attr(&a),
                Generation(a.generation),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn refuse_if_read_only(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        target: &[u8],
    ) -> Result<NsAttr, Errno> {
        self.refuse_if_read_only()?;
        self.refuse_in_snapshots(parent, name)?;
        self.attr_call(
            req,
            NsCall::Make {
                dir: self.eng(parent),
                name: name.as_bytes().to_vec(),
                mode,
                rdev,
                target: target.to_vec(),
            },
        )
    }

    fn write_at(&self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.lanes
            .call(&Wire::Write {
                ino,
                offset,
                data: data.to_vec(),
            })
            .map(|_| ())
            .map_err(errno)
    }

    /// Writes zeros over `[offset, offset + len)`.
    fn zero(&self, ino: u64, offset: u64, len: u64) -> Result<(), Errno> {
        let zeros = vec![0u8; MAX_IO as usize];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = (end - at).min(MAX_IO as u64) as usize;
            self.write_at(ino, at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Drops what the kernel holds of `ino` (attributes, and pages too when
    /// `pages`).
    fn invalidate(&self, ino: u64, pages: bool) {
        if let Some(n) = self.notifier.get() {
            let offset = if pages { 0 } else { -1 };
            if let Err(e) = n.inval_inode(self.fuse(ino), offset, 0) {
                // ENOENT: the kernel holds nothing of it.
                if e.raw_os_error() != Some(libc::ENOENT) {
                    tracing::debug!("mount: invalidating inode {ino}: {e}");
                }
            }
        }
    }

    fn opened(&self, ino: u64) {
        if let Ok(mut m) = self.open.lock() {
            *m.entry(ino).or_default() += 1;
        }
    }

    /// The orphan directory (made on first use, owned by root, 0700).
    fn orphan_dir(&self) -> Result<u64, Errno> {
        if let Some(d) = self.orphan_dir.get() {
            return Ok(*d);
        }
        let make = self.lanes.ns(
            0,
            0,
            NsCall::Make {
                dir: self.root,
                name: ORPHANS.to_vec(),
                mode: libc::S_IFDIR | 0o700,
                rdev: 0,
                target: Vec::new(),
            },
        );
        let body = match make {
            Err(code) if code == -libc::EEXIST => self
                .lanes
                .ns(
                    0,
                    0,
                    NsCall::Lookup {
                        dir: self.root,
                        name: ORPHANS.to_vec(),
                    },
                )
                .map_err(errno)?,
            r => r.map_err(errno)?,
        };
        let a = NsAttr::from_body(&body).map_err(|_| Errno::EPROTO)?;
        Ok(*self.orphan_dir.get_or_init(|| a.ino))
    }

    /// This mount's prefix for orphan names: host and process.
    fn orphan_prefix() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}-", host.trim(), std::process::id())
    }

    /// Unlinks `dir`/`name`; a regular file open through this mount with
    /// no other name is moved to the orphan directory instead, and goes
    /// at its last close.
    fn unlink_or_orphan(&self, req: &Request, dir: u64, name: &OsStr) -> Result<(), Errno> {
        let any_open = self.open.lock().map(|m| !m.is_empty()).unwrap_or(false);
        if any_open {
            let a = self.attr_call(
                req,
                NsCall::Lookup {
                    dir,
                    name: name.as_bytes().to_vec(),
                },
            )?;
            let is_open = self
                .open
                .lock()
                .map(|m| m.get(&a.ino).is_some_and(|n| *n > 0))
                .unwrap_or(false);
            if is_open && a.nlink == 1 && a.mode & libc::S_IFMT == libc::S_IFREG {
                let hidden = format!("{}{}", Self::orphan_prefix(), a.ino).into_bytes();
                self.ns(
                    req,
                    NsCall::Rename {
                        from_dir: dir,
                        from: name.as_bytes().to_vec(),
                        to_dir: self.orphan_dir()?,
                        to: hidden.clone(),
                        flags: 0,
                    },
                )?;
                if let Ok(mut m) = self.orphans.lock() {
                    m.insert(a.ino, hidden);
                }
                return Ok(());
            }
        }
        self.ns(
            req,
            NsCall::Unlink {
                dir,
                name: name.as_bytes().to_vec(),
            },
        )
        .map(|_| ())
    }

    /// Removes the orphans an earlier mount on this host left behind (its
    /// process is gone).
    pub fn sweep_orphans(&self) {
        let Ok(body) = self.lanes.ns(
            0,
            0,
            NsCall::Lookup {
                dir: self.root,
                name: ORPHANS.to_vec(),
            },
        ) else {
            return;
        };
        let Ok(d) = NsAttr::from_body(&body) else {
            return;
        };
        let host = format!(
            "{}-",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
        );
        let mut cookie = 0;
        loop {
            let call = NsCall::ReadDir {
                dir: d.ino,
                cookie,
                max: ns::MAX_ENTRIES,
                plus: false,
            };
            let Ok(page) = self
                .lanes
                .ns(0, 0, call)
                .and_then(|b| ns::decode_entries(&b).map_err(|_| -libc::EPROTO))
            else {
                return;
            };
            if page.is_empty() {
                return;
            }
            for e in page {
                cookie = e.cookie;
                let name = String::from_utf8_lossy(&e.name).to_string();
                let pid = name
                    .strip_prefix(&host)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                let gone = pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
                if gone {
                    let _ = self.lanes.ns(
                        0,
                        0,
                        NsCall::Unlink {
                            dir: d.ino,
                            name: e.name,
                        },
                    );
                }
            }
        }
    }

    fn listing(&self, fh: FileHandle) -> Arc<Mutex<Listing>> {
        let mut m = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(fh.0).or_default().clone()
    }

    /// Entries of directory `dir` from the kernel's offset `offset` on:
    /// offset 1 is `.`, 2 is `..`, and an entry with cookie `c` is `c + 2`.
    fn entries_from(
        &self,
        req: &Request,
        dir: u64,
        fh: FileHandle,
        offset: u64,
        plus: bool,
    ) -> Result<Vec<(u64, NsEntry)>, Errno> {
        let listing = self.listing(fh);
        let mut l = listing.lock().unwrap_or_else(|p| p.into_inner());
        let start = offset.max(2);
        let last = l.page.last().map_or(0, |(o, _)| *o);
        let held =
            l.from.is_some_and(|f| f <= start) && (last > start || l.end) && (l.plus || !plus);
        if !held {
            let body = self.ns(
                req,
                NsCall::ReadDir {
                    dir,
                    cookie: start - 2,
                    max: ns::MAX_ENTRIES,
                    plus,
                },
            )?;
            let page = ns::decode_entries(&body).map_err(|_| Errno::EPROTO)?;
            l.end = page.len() < ns::MAX_ENTRIES as usize;
            l.from = Some(start);
            l.plus = plus;
            l.page = page.into_iter().map(|e| (e.cookie + 2, e)).collect();
        }
        Ok(l.page.iter().filter(|(o, _)| *o > start).cloned().collect())
    }
}

impl Filesystem for FlintFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_MAX_PAGES;
        let offered = config.capabilities();
        let want = if self.writeback_cache {
            want | InitFlags::FUSE_WRITEBACK_CACHE
        } else {
            want
        };
        if let Err(missing) = config.add_capabilities(want & offered) {
            tracing::warn!("mount: the kernel refused capabilities {missing:?}");
        }
        let _ = config.set_max_write(MAX_IO);
        // Readahead of several 1 MiB requests at once, so a sequential
        // reader keeps that many in flight on the session threads.
        let readahead = match config.set_max_readahead(READAHEAD) {
            Ok(_) => READAHEAD,
            Err(nearest) => {
                let _ = config.set_max_readahead(nearest);
                nearest
            }
        };
        let _ = config.set_max_background(64);
        tracing::info!(
"mount: kernel FUSE {}: readahead {} KiB, write-back cache {}, readdirplus {}, export {}, max pages {}, FUSE-over-io_uring {} (this mount uses /dev/fuse)",
            config.kernel_abi(),
            readahead >> 10,
            self.writeback_cache && offered.contains(InitFlags::FUSE_WRITEBACK_CACHE),
            offered.contains(InitFlags::FUSE_DO_READDIRPLUS),
            offered.contains(InitFlags::FUSE_EXPORT_SUPPORT),
            offered.contains(InitFlags::FUSE_MAX_PAGES),
            if offered.contains(InitFlags::FUSE_OVER_IO_URING) {
                "offered"
            } else {
                "not offered"
            },
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name.as_bytes() == ORPHANS {
            return reply.error(Errno::ENOENT);
        }
        if let Some(r) = self.snapshot_lookup(req, self.eng(parent), name) {
            return self.reply_entry(r, reply);
        }
        let r = self.attr_call(
            req,
            NsCall::Lookup {
                dir: self.eng(parent),
                name: name.as_bytes().to_vec(),
            },
        );
        self.reply_entry(r, reply);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let eng = self.eng(ino);
        if eng == SNAPDIR {
            return match self.snapdir_attr(req) {
                Ok(a) => reply.attr(&self.ttl.attr, &self.file_attr(&a)),
                Err(e) => reply.error(e),
            };
        }
        match self.attr_call(req, NsCall::GetAttr { ino: eng }) {
            Ok(mut a) => {
                if self.orphans.lock().is_ok_and(|m| m.contains_key(&eng)) {
                    // Unlinked while open: no name is left.
                    a.nlink = 0;
                }
                reply.attr(&self.ttl.attr, &self.file_attr(&a))
            }
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttrs {
            perm: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(nanos_or_now),
            mtime: mtime.map(nanos_or_now),
        };
        let r = self.refuse_if_read_only().and_then(|()| {
            self.attr_call(
                req,
                NsCall::SetAttr {
                    ino: self.eng(ino),
                    set,
                },
            )
        });
        match r {
            Ok(a) => reply.attr(&self.ttl.attr, &self.file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ns(req, NsCall::Readlink { ino: self.eng(ino) }) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.make(req, parent, name, mode, rdev, &[]);
        self.reply_entry(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.make(req, parent, name, libc::S_IFDIR | (mode & 0o7777), 0, &[]);
        self.reply_entry(r, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.unlink_or_orphan(req, self.eng(parent), name));
        reply_empty(r, reply)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.refuse_if_read_only().and_then(|()| {
            self.ns(
                req,
                NsCall::Rmdir {
                    dir: self.eng(parent),
                    name: name.as_bytes().to_vec(),
                },
            )
        });
        reply_empty(r, reply)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let r = self.make(
            req,
            parent,
            link_name,
            libc::S_IFLNK | 0o777,
            0,
            target.as_os_str().as_bytes(),
        );
        self.reply_entry(r, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let mut wire_flags = 0;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            wire_flags |= 1;
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            wire_flags |= 2;
        }
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.refuse_in_snapshots(parent, name))
            .and_then(|()| self.refuse_in_snapshots(newparent, newname))
            .and_then(|()| {
                self.ns(
                    req,
                    NsCall::Rename {
                        from_dir: self.eng(parent),
                        from: name.as_bytes().to_vec(),
                        to_dir: self.eng(newparent),
                        to: newname.as_bytes().to_vec(),
                        flags: wire_flags,
                    },
                )
            });
        reply_empty(r, reply)
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self
            .refuse_if_read_only()
            .and_then(|()| self.refuse_in_snapshots(newparent, newname))
            .and_then(|()| {
                self.attr_call(
                    req,
                    NsCall::Link {
                        ino: self.eng(ino),
                        dir: self.eng(newparent),
                        name: newname.as_bytes().to_vec(),
                    },
                )
            });
        self.reply_entry(r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let eng = self.eng(ino);
        if writes && (self.read_only || is_view(eng)) {
            return reply.error(Errno::EROFS);
        }
        // Close-to-open: what another client changed since this mount
        // last saw the file must not come from the kernel's caches.
        let now = match self.attr_call_quiet(req, eng) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        let before = self.seen.lock().ok().and_then(|m| m.get(&eng).copied());
        let same = before
            == Some(Seen {
                size: now.size,
                mtime: now.mtime,
            });
        self.saw(&now);
        let mut open = FopenFlags::empty();
        if flags.0 & libc::O_DIRECT != 0 {
            open |= FopenFlags::FOPEN_DIRECT_IO;
        } else if same {
            open |= FopenFlags::FOPEN_KEEP_CACHE;
        } else {
            self.invalidate(eng, false);
        }
        self.opened(eng);
        reply.opened(FileHandle(0), open);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.lanes.call(&Wire::Read {
            ino: self.eng(ino),
            offset,
            len: size.min(wire::MAX_IO as u32),
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.read_only {
            return reply.error(Errno::EROFS);
        }
        let eng = self.eng(ino);
        match self.write_at(eng, offset, data) {
            Ok(()) => {
                // The file changed: the next open fetches its attributes
                // again (the kernel's pages stay, being this write's).
                if let Ok(mut m) = self.seen.lock() {
                    m.remove(&eng);
                }
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let eng = self.eng(ino);
        let last = self.open.lock().is_ok_and(|mut m| match m.get_mut(&eng) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                m.remove(&eng);
                true
            }
            None => false,
        });
        let orphan = if last {
            self.orphans.lock().ok().and_then(|mut m| m.remove(&eng))
        } else {
            None
        };
        if let (Some(name), Some(dir)) = (orphan, self.orphan_dir.get()) {
            if let Err(e) = self.ns(req, NsCall::Unlink { dir: *dir, name }) {
                tracing::warn!("mount: removing unlinked file {eng} at its last close: {e:?}");
            }
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Every write was acknowledged before it returned.
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.ns(req, NsCall::Fsync { ino: self.eng(ino) }), reply)
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = self.eng(ino);
        if offset < 1 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset < 2 && reply.add(ino, 2, FileType::Directory, "..") {
            return reply.ok();
        }
        let listing = if dir == SNAPDIR {
            self.snapshot_listing(req, offset)
        } else {
            self.entries_from(req, dir, fh, offset, false)
        };
        match listing {
            Ok(es) => {
                for (off, e) in es {
                    if dir == self.root && e.name == ORPHANS {
                        continue;
                    }
                    if reply.add(
                        self.fuse(e.ino),
                        off,
                        kind_of(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = self.eng(ino);
        if offset < 2 {
            // `.` and `..` carry no attributes the kernel keeps.
            let a = NsAttr {
                ino: dir,
                mode: libc::S_IFDIR,
                ..NsAttr::default()
            };
            let fa = self.file_attr(&a);
            let zero = Duration::ZERO;
            if offset < 1 && reply.add(ino, 1, ".", &zero, &fa, Generation(0)) {
                return reply.ok();
            }
            if reply.add(ino, 2, "..", &zero, &fa, Generation(0)) {
                return reply.ok();
            }
        }
        let listing = if dir == SNAPDIR {
            self.snapshot_listing(req, offset)
        } else {
            self.entries_from(req, dir, fh, offset, true)
        };
        match listing {
            Ok(es) => {
                for (off, e) in es {
                    let Some(a) = e.attr else { continue };
                    if dir == self.root && e.name == ORPHANS {
                        continue;
                    }
                    self.saw(&a);
                    let fa = self.file_attr(&a);
                    if reply.add(
                        self.fuse(e.ino),
                        off,
                        OsStr::from_bytes(&e.name),
                        &self.ttl.entry,
                        &fa,
                        Generation(a.generation),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut m) = self.dirs.lock() {
            m.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.ns(req, NsCall::Fsync { ino: self.eng(ino) }), reply)
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        // In a directory quota `df` shows the quota (snapshots: the file
        // system).
        let eng = self.eng(ino);
        let call = if crate::meta::snap::is_view(eng) {
            NsCall::StatFs
        } else {
            NsCall::StatFsAt { ino: eng }
        };
        let r = self
            .ns(req, call)
            .and_then(|b| NsStatFs::from_body(&b).map_err(|_| Errno::EPROTO));
        match r {
            Ok(s) => {
                const BSIZE: u64 = 4096;
                let blocks = s.capacity / BSIZE;
                let free = s.capacity.saturating_sub(s.used) / BSIZE;
                // Inodes are not counted against a limit.
                let files = 1 << 40;
                reply.statfs(
                    blocks,
                    free,
                    free,
                    files,
                    files,
                    BSIZE as u32,
                    255,
                    BSIZE as u32,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            return reply.error(Errno::EINVAL);
        }
        let mode = match flags {
            0 => 0,
            libc::XATTR_CREATE => 1,
            libc::XATTR_REPLACE => 2,
            _ => return reply.error(Errno::EINVAL),
        };
        let r = self.refuse_if_read_only().and_then(|()| {
            self.ns(
                req,
                NsCall::SetXattr {
                    ino: self.eng(ino),
                    name: name.as_bytes().to_vec(),
                    value: value.to_vec(),
                    mode,
                },
            )
        });
        reply_empty(r, reply)
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.ns(
            req,
            NsCall::GetXattr {
                ino: self.eng(ino),
                name: name.as_bytes().to_vec(),
            },
        );
        reply_xattr(r, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self
            .ns(req, NsCall::ListXattr { ino: self.eng(ino) })
            .and_then(|b| {
                let mut r = Reader::new(&b);
                let n = r.count(4, "names").map_err(|_| Errno::EPROTO)?;
                let mut out = Vec::new();
                for _ in 0..n {
                    let name = r.bytes(wire::MAX_NAME, "name").map_err(|_| Errno::EPROTO)?;
                    out.extend_from_slice(name);
                    out.push(0);
                }
                Ok(out)
            });
        reply_xattr(r, size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.refuse_if_read_only().and_then(|()| {
            self.ns(
                req,
                NsCall::RemoveXattr {
                    ino: self.eng(ino),
                    name: name.as_bytes().to_vec(),
                },
            )
        });
        reply_empty(r, reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mode = libc::S_IFREG | (mode & 0o7777);
        match self.make(req, parent, name, mode, 0, &[]) {
            Ok(a) => {
                let open = if flags & libc::O_DIRECT != 0 {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                };
                self.opened(a.ino);
                reply.created(
                    &self.ttl.entry,
                    &self.file_attr(&a),
                    Generation(a.generation),
                    FileHandle(0),
                    open,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let eng = self.eng(ino);
        let r = self.refuse_if_read_only().and_then(|()| {
            let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let size = self.attr_call(req, NsCall::GetAttr { ino: eng })?.size;
            let end = offset.saturating_add(length);
            match mode & !libc::FALLOC_FL_KEEP_SIZE {
                // Space is not reserved ahead (a log-structured store
                // allocates at write time): the size grows, holes read as
                // zeros.
                0 => {}
                libc::FALLOC_FL_PUNCH_HOLE if keep => {
                    self.zero(eng, offset, end.min(size).saturating_sub(offset))?;
                }
                libc::FALLOC_FL_ZERO_RANGE => {
                    self.zero(eng, offset, end.min(size).saturating_sub(offset))?;
                }
                _ => return Err(Errno::EOPNOTSUPP),
            }
            if !keep && end > size {
                self.attr_call(
                    req,
                    NsCall::SetAttr {
                        ino: eng,
                        set: SetAttrs {
                            size: Some(end),
                            ..SetAttrs::default()
                        },
                    },
                )?;
                self.invalidate(eng, false);
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl FlintFs {
    /// A file's attributes (for `open`).
    fn attr_call_quiet(&self, req: &Request, ino: u64) -> Result<NsAttr, Errno> {
        let body = self.ns(req, NsCall::GetAttr { ino })?;
        NsAttr::from_body(&body).map_err(|_| Errno::EPROTO)
    }
}

/// Answers a call whose success carries nothing.
fn reply_empty<T>(r: Result<T, Errno>, reply: ReplyEmpty) {
    match r {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_xattr(r: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}
