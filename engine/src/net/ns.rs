//! Namespace calls addressed by inode, the way a kernel client (the FUSE
//! mount, later NFS) asks: `lookup(dir, name)`, `getattr(ino)`,
//! `mknod(dir, name, mode)`, ... Each call names its file system and
//! carries the caller's credentials (owner of what it creates); the server
//! checks that every inode it names belongs to the session's organization.
//!
//! One wire operation ([`super::wire::Op::Ns`]) carries them all: after the
//! op byte come the file system's name, the caller's uid and gid, a call
//! byte and the call's arguments (PROTOCOL.md, "Namespace by inode").

use crate::codec::{DecodeError, Reader, Writer};

use super::wire::{MAX_NAME, MAX_PATH, MAX_XATTR};

/// Most entries one `ReadDir` returns.
pub const MAX_ENTRIES: u32 = 1024;

/// Which attributes a `SetAttr` changes (`None`: keep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttrs {
    /// Permission bits (and setuid/setgid/sticky).
    pub perm: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size.
    pub size: Option<u64>,
    /// Access time (ns since the epoch).
    pub atime: Option<i64>,
    /// Modification time.
    pub mtime: Option<i64>,
}

/// One namespace call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsCall {
    /// The file system's root directory.
    Root,
    /// The inode `name` names in `dir`.
    Lookup {
        /// Directory.
        dir: u64,
        /// Entry name.
        name: Vec<u8>,
    },
    /// An inode's attributes.
    GetAttr {
        /// Inode.
        ino: u64,
    },
    /// Changes attributes (a size truncates).
    SetAttr {
        /// Inode.
        ino: u64,
        /// What to change.
        set: SetAttrs,
    },
    /// Creates `name` in `dir`: the kind comes from `mode`'s `S_IFMT`
    /// bits (a symlink points to `target`).
    Make {
        /// Directory.
        dir: u64,
        /// Entry name.
        name: Vec<u8>,
        /// Kind and permission bits.
        mode: u32,
        /// Device number of a device node.
        rdev: u32,
        /// A symlink's target (empty otherwise).
        target: Vec<u8>,
    },
    /// Removes a non-directory entry.
    Unlink {
        /// Directory.
        dir: u64,
        /// Entry name.
        name: Vec<u8>,
    },
    /// Removes an empty directory.
    Rmdir {
        /// Directory.
        dir: u64,
        /// Entry name.
        name: Vec<u8>,
    },
    /// Renames `from_dir`/`from` to `to_dir`/`to`.
    Rename {
        /// Source directory.
        from_dir: u64,
        /// Source name.
        from: Vec<u8>,
        /// Target directory.
        to_dir: u64,
        /// Target name.
        to: Vec<u8>,
        /// Bit 0: no-replace; bit 1: exchange.
        flags: u8,
    },
    /// A hard link: `dir`/`name` names `ino` too.
    Link {
        /// The inode.
        ino: u64,
        /// Directory of the new name.
        dir: u64,
        /// The new name.
        name: Vec<u8>,
    },
    /// A symlink's target.
    Readlink {
        /// The symlink.
        ino: u64,
    },
    /// Up to `max` entries of `dir` after `cookie`, with each entry's
    /// attributes when `plus`.
    ReadDir {
        /// Directory.
        dir: u64,
        /// The last entry's cookie of the previous page (0: from the start).
        cookie: u64,
        /// Most entries (at most [`MAX_ENTRIES`]).
        max: u32,
        /// Attributes too (readdirplus).
        plus: bool,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// Inode.
        ino: u64,
        /// Attribute name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// 0 create or replace, 1 create only, 2 replace only.
        mode: u8,
    },
    /// An extended attribute's value.
    GetXattr {
        /// Inode.
        ino: u64,
        /// Attribute name.
        name: Vec<u8>,
    },
    /// The names of an inode's extended attributes.
    ListXattr {
        /// Inode.
        ino: u64,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// Inode.
        ino: u64,
        /// Attribute name.
        name: Vec<u8>,
    },
    /// The file system's capacity and use.
    StatFs,
    /// Makes a file's acknowledged changes durable (on a write-back file
    /// system; a durable one answers at once).
    Fsync {
        /// Inode.
        ino: u64,
    },
    /// The file system's snapshots: entries (oldest first) whose inode is
    /// the snapshot's root directory, with its attributes, and whose cookie
    /// is the snapshot's id.
    Snapshots,
    /// `statfs` at an inode: the innermost directory quota it lies under
    /// (its limit as the capacity, its use), or the file system's if none.
    StatFsAt {
        /// Inode.
        ino: u64,
    },
}

/// A namespace request: the file system, the caller, the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRequest {
    /// File system name.
    pub fs: String,
    /// Caller's user id.
    pub uid: u32,
    /// Caller's group id.
    pub gid: u32,
    /// The call.
    pub call: NsCall,
}

impl NsCall {
    fn code(&self) -> u8 {
        match self {
            NsCall::Root => 0,
            NsCall::Lookup { .. } => 1,
            NsCall::GetAttr { .. } => 2,
            NsCall::SetAttr { .. } => 3,
            NsCall::Make { .. } => 4,
            NsCall::Unlink { .. } => 5,
            NsCall::Rmdir { .. } => 6,
            NsCall::Rename { .. } => 7,
            NsCall::Link { .. } => 8,
            NsCall::Readlink { .. } => 9,
            NsCall::ReadDir { .. } => 10,
            NsCall::SetXattr { .. } => 11,
            NsCall::GetXattr { .. } => 12,
            NsCall::ListXattr { .. } => 13,
            NsCall::RemoveXattr { .. } => 14,
            NsCall::StatFs => 15,
            NsCall::Fsync { .. } => 16,
            NsCall::Snapshots => 17,
            NsCall::StatFsAt { .. } => 18,
        }
    }

    /// The call's name, for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            NsCall::Root => "ns.root",
            NsCall::Lookup { .. } => "ns.lookup",
            NsCall::GetAttr { .. } => "ns.getattr",
            NsCall::SetAttr { .. } => "ns.setattr",
            NsCall::Make { .. } => "ns.make",
            NsCall::Unlink { .. } => "ns.unlink",
            NsCall::Rmdir { .. } => "ns.rmdir",
            NsCall::Rename { .. } => "ns.rename",
            NsCall::Link { .. } => "ns.link",
            NsCall::Readlink { .. } => "ns.readlink",
            NsCall::ReadDir { .. } => "ns.readdir",
            NsCall::SetXattr { .. } => "ns.setxattr",
            NsCall::GetXattr { .. } => "ns.getxattr",
            NsCall::ListXattr { .. } => "ns.listxattr",
            NsCall::RemoveXattr { .. } => "ns.removexattr",
            NsCall::StatFs => "ns.statfs",
            NsCall::Fsync { .. } => "ns.fsync",
            NsCall::Snapshots => "ns.snapshots",
            NsCall::StatFsAt { .. } => "ns.statfs",
        }
    }

    /// The inodes the call names (each must be the session's).
    pub fn inodes(&self) -> Vec<u64> {
        match self {
            NsCall::Root | NsCall::StatFs | NsCall::Snapshots => vec![],
            NsCall::Lookup { dir, .. }
            | NsCall::Make { dir, .. }
            | NsCall::Unlink { dir, .. }
            | NsCall::Rmdir { dir, .. }
            | NsCall::ReadDir { dir, .. } => vec![*dir],
            NsCall::GetAttr { ino }
            | NsCall::SetAttr { ino, .. }
            | NsCall::Readlink { ino }
            | NsCall::SetXattr { ino, .. }
            | NsCall::GetXattr { ino, .. }
            | NsCall::ListXattr { ino }
            | NsCall::RemoveXattr { ino, .. }
            | NsCall::StatFsAt { ino }
            | NsCall::Fsync { ino } => vec![*ino],
            NsCall::Rename {
                from_dir, to_dir, ..
            } => vec![*from_dir, *to_dir],
            NsCall::Link { ino, dir, .. } => vec![*ino, *dir],
        }
    }
}

fn opt_u32(w: &mut Writer, v: Option<u32>) {
    w.u8(u8::from(v.is_some())).u32(v.unwrap_or(0));
}

fn opt_u64(w: &mut Writer, v: Option<u64>) {
    w.u8(u8::from(v.is_some())).u64(v.unwrap_or(0));
}

fn get_opt_u32(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u32>, DecodeError> {
    let some = r.u8(what)? != 0;
    let v = r.u32(what)?;
    Ok(some.then_some(v))
}

fn get_opt_u64(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u64>, DecodeError> {
    let some = r.u8(what)? != 0;
    let v = r.u64(what)?;
    Ok(some.then_some(v))
}

impl NsRequest {
    /// Encodes the request's body (after the op byte).
    pub fn encode(&self, w: &mut Writer) {
        w.str(&self.fs)
            .u32(self.uid)
            .u32(self.gid)
            .u8(self.call.code());
        match &self.call {
            NsCall::Root | NsCall::StatFs | NsCall::Snapshots => {}
            NsCall::Lookup { dir, name }
            | NsCall::Unlink { dir, name }
            | NsCall::Rmdir { dir, name } => {
                w.u64(*dir).bytes(name);
            }
            NsCall::GetAttr { ino }
            | NsCall::Readlink { ino }
            | NsCall::ListXattr { ino }
            | NsCall::StatFsAt { ino }
            | NsCall::Fsync { ino } => {
                w.u64(*ino);
            }
            NsCall::SetAttr { ino, set } => {
                w.u64(*ino);
                opt_u32(w, set.perm);
                opt_u32(w, set.uid);
                opt_u32(w, set.gid);
                opt_u64(w, set.size);
                opt_u64(w, set.atime.map(|t| t as u64));
                opt_u64(w, set.mtime.map(|t| t as u64));
            }
            NsCall::Make {
                dir,
                name,
                mode,
                rdev,
                target,
            } => {
                w.u64(*dir).bytes(name).u32(*mode).u32(*rdev).bytes(target);
            }
            NsCall::Rename {
                from_dir,
                from,
                to_dir,
                to,
                flags,
            } => {
                w.u64(*from_dir)
                    .bytes(from)
                    .u64(*to_dir)
                    .bytes(to)
                    .u8(*flags);
            }
            NsCall::Link { ino, dir, name } => {
                w.u64(*ino).u64(*dir).bytes(name);
            }
            NsCall::ReadDir {
                dir,
                cookie,
                max,
                plus,
            } => {
                w.u64(*dir).u64(*cookie).u32(*max).u8(u8::from(*plus));
            }
            NsCall::SetXattr {
                ino,
                name,
                value,
                mode,
            } => {
                w.u64(*ino).bytes(name).bytes(value).u8(*mode);
            }
            NsCall::GetXattr { ino, name } | NsCall::RemoveXattr { ino, name } => {
                w.u64(*ino).bytes(name);
            }
        }
    }

    /// Decodes the request's body (after the op byte).
    pub fn decode(r: &mut Reader<'_>) -> Result<NsRequest, DecodeError> {
        let fs = r.str(MAX_NAME, "file system name")?;
        let uid = r.u32("uid")?;
        let gid = r.u32("gid")?;
        let code = r.u8("namespace call")?;
        let name = |r: &mut Reader<'_>| Ok::<_, DecodeError>(r.bytes(MAX_PATH, "name")?.to_vec());
        let call = match code {
            0 => NsCall::Root,
            1 => NsCall::Lookup {
                dir: r.u64("dir")?,
                name: name(r)?,
            },
            2 => NsCall::GetAttr { ino: r.u64("ino")? },
            3 => {
                let ino = r.u64("ino")?;
                let set = SetAttrs {
                    perm: get_opt_u32(r, "perm")?,
                    uid: get_opt_u32(r, "uid")?,
                    gid: get_opt_u32(r, "gid")?,
                    size: get_opt_u64(r, "size")?,
                    atime: get_opt_u64(r, "atime")?.map(|t| t as i64),
                    mtime: get_opt_u64(r, "mtime")?.map(|t| t as i64),
                };
                NsCall::SetAttr { ino, set }
            }
            4 => NsCall::Make {
                dir: r.u64("dir")?,
                name: name(r)?,
                mode: r.u32("mode")?,
                rdev: r.u32("rdev")?,
                target: r.bytes(MAX_PATH, "symlink target")?.to_vec(),
            },
            5 => NsCall::Unlink {
                dir: r.u64("dir")?,
                name: name(r)?,
            },
            6 => NsCall::Rmdir {
                dir: r.u64("dir")?,
                name: name(r)?,
            },
            7 => NsCall::Rename {
                from_dir: r.u64("dir")?,
                from: name(r)?,
                to_dir: r.u64("dir")?,
                to: name(r)?,
                flags: match r.u8("rename flags")? {
                    f @ 0..=2 => f,
                    _ => {
                        return Err(DecodeError {
                            what: "rename flags",
                        })
                    }
                },
            },
            8 => NsCall::Link {
                ino: r.u64("ino")?,
                dir: r.u64("dir")?,
                name: name(r)?,
            },
            9 => NsCall::Readlink { ino: r.u64("ino")? },
            10 => NsCall::ReadDir {
                dir: r.u64("dir")?,
                cookie: r.u64("cookie")?,
                max: r.u32("max entries")?.min(MAX_ENTRIES),
                plus: r.u8("plus")? != 0,
            },
            11 => NsCall::SetXattr {
                ino: r.u64("ino")?,
                name: name(r)?,
                value: r.bytes(MAX_XATTR, "xattr value")?.to_vec(),
                mode: match r.u8("xattr mode")? {
                    m @ 0..=2 => m,
                    _ => return Err(DecodeError { what: "xattr mode" }),
                },
            },
            12 => NsCall::GetXattr {
                ino: r.u64("ino")?,
                name: name(r)?,
            },
            13 => NsCall::ListXattr { ino: r.u64("ino")? },
            14 => NsCall::RemoveXattr {
                ino: r.u64("ino")?,
                name: name(r)?,
            },
            15 => NsCall::StatFs,
            16 => NsCall::Fsync { ino: r.u64("ino")? },
            17 => NsCall::Snapshots,
            18 => NsCall::StatFsAt { ino: r.u64("ino")? },
            _ => {
                return Err(DecodeError {
                    what: "namespace call",
                })
            }
        };
        Ok(NsRequest { fs, uid, gid, call })
    }
}

/// An inode's attributes as namespace calls return them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsAttr {
    /// Inode number.
    pub ino: u64,
    /// Generation (with the number, names this inode and no later one).
    pub generation: u64,
    /// Size in bytes.
    pub size: u64,
    /// 4 KiB blocks stored.
    pub blocks: u64,
    /// Kind and permission bits (`st_mode`).
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u32,
    /// Last access (ns since the epoch).
    pub atime: i64,
    /// Last change of the contents.
    pub mtime: i64,
    /// Last change of the inode.
    pub ctime: i64,
    /// A directory's parent (its `..`); 0 for others.
    pub parent: u64,
}

impl NsAttr {
    /// Encodes it.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.ino)
            .u64(self.generation)
            .u64(self.size)
            .u64(self.blocks);
        w.u32(self.mode)
            .u32(self.nlink)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.rdev);
        w.u64(self.atime as u64)
            .u64(self.mtime as u64)
            .u64(self.ctime as u64)
            .u64(self.parent);
    }

    /// Decodes one.
    pub fn decode(r: &mut Reader<'_>) -> Result<NsAttr, DecodeError> {
        Ok(NsAttr {
            ino: r.u64("ino")?,
            generation: r.u64("generation")?,
            size: r.u64("size")?,
            blocks: r.u64("blocks")?,
            mode: r.u32("mode")?,
            nlink: r.u32("nlink")?,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            rdev: r.u32("rdev")?,
            atime: r.u64("atime")? as i64,
            mtime: r.u64("mtime")? as i64,
            ctime: r.u64("ctime")? as i64,
            parent: r.u64("parent")?,
        })
    }

    /// Decodes a whole body holding one.
    pub fn from_body(b: &[u8]) -> Result<NsAttr, DecodeError> {
        NsAttr::decode(&mut Reader::new(b))
    }

    /// Encodes it as a whole body.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.buf
    }
}

/// One entry of a `ReadDir` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode.
    pub ino: u64,
    /// Kind (`S_IFMT` bits).
    pub kind: u32,
    /// Pass it back to continue after this entry.
    pub cookie: u64,
    /// Its attributes (readdirplus only).
    pub attr: Option<NsAttr>,
}

/// Encodes a `ReadDir` answer.
pub fn encode_entries(entries: &[NsEntry]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(entries.len() as u32);
    for e in entries {
        w.bytes(&e.name).u64(e.ino).u32(e.kind).u64(e.cookie);
        w.u8(u8::from(e.attr.is_some()));
        if let Some(a) = &e.attr {
            a.encode(&mut w);
        }
    }
    w.buf
}

/// Decodes a `ReadDir` answer.
pub fn decode_entries(b: &[u8]) -> Result<Vec<NsEntry>, DecodeError> {
    let mut r = Reader::new(b);
    let n = r.count(4 + 8 + 4 + 8 + 1, "entries")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes(MAX_NAME, "name")?.to_vec();
        let ino = r.u64("ino")?;
        let kind = r.u32("kind")?;
        let cookie = r.u64("cookie")?;
        let attr = if r.u8("plus")? != 0 {
            Some(NsAttr::decode(&mut r)?)
        } else {
            None
        };
        out.push(NsEntry {
            name,
            ino,
            kind,
            cookie,
            attr,
        });
    }
    Ok(out)
}

/// A file system's capacity and use (`statfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsStatFs {
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes its files hold.
    pub used: u64,
}

impl NsStatFs {
    /// Encodes it as a body.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.capacity).u64(self.used);
        w.buf
    }

    /// Decodes a body.
    pub fn from_body(b: &[u8]) -> Result<NsStatFs, DecodeError> {
        let mut r = Reader::new(b);
        Ok(NsStatFs {
            capacity: r.u64("capacity")?,
            used: r.u64("used")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(call: NsCall) {
        let req = NsRequest {
            fs: "train".into(),
            uid: 1000,
            gid: 100,
            call,
        };
        let mut w = Writer::default();
        req.encode(&mut w);
        let mut r = Reader::new(&w.buf);
        assert_eq!(NsRequest::decode(&mut r).unwrap(), req);
        assert_eq!(r.remaining(), 0);
        // Every truncation is refused, never misread.
        for cut in 0..w.buf.len() {
            let mut r = Reader::new(&w.buf[..cut]);
            assert!(NsRequest::decode(&mut r).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_call_round_trips_and_truncations_are_refused() {
        let n = || b"name".to_vec();
        for call in [
            NsCall::Lookup { dir: 7, name: n() },
            NsCall::GetAttr { ino: 9 },
            NsCall::SetAttr {
                ino: 9,
                set: SetAttrs {
                    perm: Some(0o4755),
                    size: Some(1 << 40),
                    mtime: Some(-5),
                    ..SetAttrs::default()
                },
            },
            NsCall::Make {
                dir: 7,
                name: n(),
                mode: libc::S_IFLNK | 0o777,
                rdev: 0,
                target: b"/x/y".to_vec(),
            },
            NsCall::Unlink { dir: 7, name: n() },
            NsCall::Rmdir { dir: 7, name: n() },
            NsCall::Rename {
                from_dir: 1,
                from: n(),
                to_dir: 2,
                to: b"other".to_vec(),
                flags: 2,
            },
            NsCall::Link {
                ino: 3,
                dir: 4,
                name: n(),
            },
            NsCall::Readlink { ino: 3 },
            NsCall::ReadDir {
                dir: 4,
                cookie: 99,
                max: 100,
                plus: true,
            },
            NsCall::SetXattr {
                ino: 3,
                name: b"user.a".to_vec(),
                value: vec![1, 2, 3],
                mode: 1,
            },
            NsCall::GetXattr {
                ino: 3,
                name: b"user.a".to_vec(),
            },
            NsCall::ListXattr { ino: 3 },
            NsCall::RemoveXattr {
                ino: 3,
                name: b"user.a".to_vec(),
            },
            NsCall::Fsync { ino: 3 },
            NsCall::Snapshots,
        ] {
            round(call);
        }
    }

    #[test]
    fn bad_codes_and_flags_are_refused() {
        let mut w = Writer::default();
        w.str("fs").u32(0).u32(0).u8(200);
        assert!(NsRequest::decode(&mut Reader::new(&w.buf)).is_err());
        let mut w = Writer::default();
        NsRequest {
            fs: "fs".into(),
            uid: 0,
            gid: 0,
            call: NsCall::Rename {
                from_dir: 1,
                from: b"a".to_vec(),
                to_dir: 1,
                to: b"b".to_vec(),
                flags: 0,
            },
        }
        .encode(&mut w);
        *w.buf.last_mut().unwrap() = 7;
        assert!(NsRequest::decode(&mut Reader::new(&w.buf)).is_err());
    }

    #[test]
    fn entries_round_trip() {
        let es = vec![
            NsEntry {
                name: b"a".to_vec(),
                ino: 5,
                kind: libc::S_IFDIR,
                cookie: 1,
                attr: None,
            },
            NsEntry {
                name: b"b".to_vec(),
                ino: 6,
                kind: libc::S_IFREG,
                cookie: 2,
                attr: Some(NsAttr {
                    ino: 6,
                    size: 10,
                    mode: libc::S_IFREG | 0o644,
                    ..NsAttr::default()
                }),
            },
        ];
        assert_eq!(decode_entries(&encode_entries(&es)).unwrap(), es);
    }
}
