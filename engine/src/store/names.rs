//! The namespace on this shard: directories, names, links, attributes and
//! extended attributes of the file systems whose directories live here,
//! each change one journaled record ([`meta::NsRecord`]) applied to the
//! shard's metadata tree. Paths resolve component by component from the
//! file system's root; symlinks inside a path are followed (at most
//! [`MAX_SYMLINKS`]), the last component is not.

use super::*;
use crate::meta::namespace::{
    Attr, Ctx, DirEntry, Ids, Kind, NsError, RenameFlags, SetAttr, XattrMode,
};
use crate::meta::{NsOp, NsRecord};

/// Symlinks one path resolution follows before ELOOP.
pub const MAX_SYMLINKS: usize = 40;

/// A namespace refusal as the store reports it (tree failures keep their
/// own kinds: a full device is ENOSPC).
pub(super) fn ns_err(e: NsError) -> StoreError {
    match e {
        NsError::Tree(t) => meta_err(t),
        e => StoreError::Ns(e),
    }
}

/// The time now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Store {
    /// The root directory of file system `fs`.
    pub fn root_of(&self, fs: FsId) -> Ino {
        meta::root_ino(fs, self.layout.shards)
    }

    /// Whether this shard holds file system `fs`'s root directory.
    pub(super) fn holds_root(&self, fs: FsId) -> bool {
        self.layout.shards.max(1) == 1 || fs % self.layout.shards == self.layout.shard
    }

    /// Applies a namespace change and queues it for the journal; a refusal
    /// journals nothing.
    pub(super) fn ns_record(&mut self, fs: FsId, ctx: Ctx, op: NsOp) -> Result<meta::NsDone> {
        let rec = NsRecord {
            fs,
            uid: ctx.uid,
            gid: ctx.gid,
            now: ctx.now,
            op,
        };
        let mut done = self
            .meta
            .apply_ns(&mut dev_pages!(self), &rec)
            .map_err(ns_err)?;
        self.publish_quotas();
        let n = self.push(Record::Ns(rec));
        self.release(n, std::mem::take(&mut done.released))?;
        Ok(done)
    }

    /// A namespace change that yields an inode (make, link, setattr): its
    /// attributes after the change.
    fn ns_change(&mut self, fs: FsId, ctx: Ctx, op: NsOp) -> Result<Attr> {
        self.ns_record(fs, ctx, op)?
            .attr
            .ok_or_else(|| StoreError::Invalid {
                reason: "a namespace change returned no inode".into(),
            })
    }

    /// Runs a read-only namespace query.
    pub(super) fn ns_read<T>(
        &mut self,
        f: impl FnOnce(&mut meta::namespace::Namespace<'_>) -> Result<T, NsError>,
    ) -> Result<T> {
        let mut ids = Ids::none();
        let mut io = dev_pages!(self);
        let mut ns = self.meta.namespace(&mut io, 0, &mut ids);
        f(&mut ns).map_err(ns_err)
    }

    /// Creates the root directory of file system `fs` (on the shard that
    /// holds it, when the file system is created).
    pub(super) fn make_root(&mut self, fs: FsId) -> Result<()> {
        let ctx = Ctx {
            uid: 0,
            gid: 0,
            now: now_nanos(),
        };
        let ino = self.root_of(fs);
        self.ns_record(fs, ctx, NsOp::Root { ino, perm: 0o755 })?;
        Ok(())
    }

    /// An inode's attributes.
    pub fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        self.ns_read(|ns| ns.getattr(ino))
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup_at(&mut self, dir: Ino, name: &[u8]) -> Result<Attr> {
        self.ns_read(|ns| ns.lookup(dir, name))
    }

    /// Resolves a path in file system `fs` (`/`-separated, relative to its
    /// root; empty or `/` is the root). Symlinks before the last component
    /// are followed: a relative target from the directory holding the
    /// link, an absolute one from the root.
    pub fn resolve(&mut self, fs: FsId, path: &str) -> Result<Attr> {
        self.walk(fs, components(path.as_bytes()))
    }

    /// Resolves path components from `fs`'s root (see [`Store::resolve`]);
    /// [`NsError::Remote`] where the path leaves this shard (the engine
    /// walks on there).
    fn walk(&mut self, fs: FsId, todo: Vec<Vec<u8>>) -> Result<Attr> {
        let w = super::Walk::from(self.root_of(fs), todo);
        match self.walk_on(fs, w)? {
            Ok(a) => Ok(a),
            Err(w) => Err(StoreError::Ns(NsError::Remote(w.at))),
        }
    }

    /// The directory and last name of a path: the parent resolved, the name
    /// checked by the operation.
    pub fn parent_and_name(&mut self, fs: FsId, path: &str) -> Result<(Attr, Vec<u8>)> {
        let mut parts = components(path.as_bytes());
        let Some(name) = parts.pop() else {
            return Err(StoreError::Invalid {
                reason: format!("path {path:?} names no entry (it is the root)"),
            });
        };
        let dir = self.walk(fs, parts)?;
        if dir.kind != Kind::Dir {
            return Err(StoreError::Ns(NsError::NotDir));
        }
        Ok((dir, name))
    }

    /// A fresh inode number (carrying this shard) and generation.
    pub(super) fn fresh_ino(&self) -> (Ino, u64) {
        let ino = (((self.meta.next_ino >> 8) + 1) << 8) | u64::from(self.layout.shard);
        (ino, self.meta.next_gen)
    }

    /// Creates `name` in directory `dir`: a file, directory, symlink (to
    /// `target`) or special file by `mode`'s kind bits.
    pub fn make(
        &mut self,
        dir: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: &[u8],
        ctx: Ctx,
    ) -> Result<Attr> {
        let d = self.getattr(dir)?;
        if mode & libc::S_IFMT == libc::S_IFLNK {
            // A symlink's target counts against its directory's quota.
            self.check_quota(d.quota, target.len() as u64)?;
        }
        let (ino, generation) = self.fresh_ino();
        self.ns_change(
            d.fs,
            ctx,
            NsOp::Make {
                dir,
                name: name.to_vec(),
                ino,
                generation,
                mode,
                rdev,
                target: target.to_vec(),
            },
        )
    }

    /// Removes a non-directory entry; returns the regular file whose last
    /// name it was (its parts on other shards are to be dropped).
    pub fn unlink_at(&mut self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Option<Ino>> {
        let d = self.getattr(dir)?;
        let op = NsOp::Unlink {
            dir,
            name: name.to_vec(),
        };
        Ok(self.ns_record(d.fs, ctx, op)?.gone)
    }

    /// Removes an empty directory.
    pub fn rmdir_at(&mut self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        let d = self.getattr(dir)?;
        let op = NsOp::Rmdir {
            dir,
            name: name.to_vec(),
        };
        self.ns_record(d.fs, ctx, op)?;
        Ok(())
    }

    /// Renames an entry; returns a regular file whose last name the rename
    /// replaced.
    pub fn rename_at(
        &mut self,
        from_dir: Ino,
        from: &[u8],
        to_dir: Ino,
        to: &[u8],
        flags: RenameFlags,
        ctx: Ctx,
    ) -> Result<Option<Ino>> {
        let d = self.getattr(from_dir)?;
        let t = self.getattr(to_dir)?;
        if t.fs != d.fs {
            return Err(StoreError::Ns(NsError::CrossDevice));
        }
        let op = NsOp::Rename {
            from_dir,
            from: from.to_vec(),
            to_dir,
            to: to.to_vec(),
            flags,
        };
        Ok(self.ns_record(d.fs, ctx, op)?.gone)
    }

    /// Gives inode `ino` another name.
    pub fn link_at(&mut self, ino: Ino, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Attr> {
        let a = self.getattr(ino)?;
        if self.getattr(dir)?.fs != a.fs {
            return Err(StoreError::Ns(NsError::CrossDevice));
        }
        let op = NsOp::Link {
            ino,
            dir,
            name: name.to_vec(),
        };
        self.ns_change(a.fs, ctx, op)
    }

    /// Changes attributes; a new size truncates (or extends with a hole)
    /// first.
    pub fn setattr(&mut self, ino: Ino, mut set: SetAttr, ctx: Ctx) -> Result<Attr> {
        let a = self.getattr(ino)?;
        if let Some(size) = set.size.take() {
            match a.kind {
                Kind::File => self.truncate_at(ino, size, ctx.now)?,
                Kind::Dir => return Err(StoreError::Ns(NsError::IsDir)),
                _ => {
                    return Err(StoreError::Ns(NsError::Invalid(
                        "only regular files have a size to set",
                    )))
                }
            }
            if set == SetAttr::default() {
                return self.getattr(ino);
            }
        }
        self.ns_change(a.fs, ctx, NsOp::SetAttr { ino, set })
    }

    /// Sets an extended attribute.
    pub fn setxattr(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        ctx: Ctx,
    ) -> Result<()> {
        let a = self.getattr(ino)?;
        let op = NsOp::SetXattr {
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
            mode,
        };
        self.ns_record(a.fs, ctx, op)?;
        Ok(())
    }

    /// An extended attribute's value.
    pub fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.ns_read(|ns| ns.getxattr(ino, name))
    }

    /// The names of an inode's extended attributes.
    pub fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.ns_read(|ns| ns.listxattr(ino))
    }

    /// Removes an extended attribute.
    pub fn removexattr(&mut self, ino: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        let a = self.getattr(ino)?;
        let op = NsOp::RemoveXattr {
            ino,
            name: name.to_vec(),
        };
        self.ns_record(a.fs, ctx, op)?;
        Ok(())
    }

    /// Up to `max` entries of directory `dir` after `cookie` (0: from the
    /// start).
    pub fn readdir(&mut self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.ns_read(|ns| ns.readdir(dir, cookie, max))
    }

    /// A symlink's target.
    pub fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        self.ns_read(|ns| ns.readlink(ino))
    }
}

/// A path's components (empty ones from `//` or a leading `/` dropped).
pub fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}
