//! The namespace through the engine: every directory operation runs on the
//! shard that holds the directory (inode numbers carry it), so create,
//! lookup, getattr, readdir and rename run on one reactor. A file system's
//! directories live on the shard of its root for now; a regular file whose
//! last name goes has its pieces on other shards dropped after it.

use super::*;
use crate::meta::namespace::{Attr, Ctx, DirEntry, RenameFlags, SetAttr, XattrMode};

impl Engine {
    /// The root directory of file system `fs`.
    pub fn root_of(&self, fs: FsId) -> Ino {
        crate::meta::root_ino(fs, self.map.shards())
    }

    /// The shard holding `fs`'s namespace.
    fn names_shard(&self, fs: FsId) -> u32 {
        self.map.shard_of_ino(self.root_of(fs))
    }

    /// Runs `f` on the shard holding inode `ino`.
    fn on_ino<R: Send + 'static>(
        &self,
        ino: Ino,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.call_shard(self.map.shard_of_ino(ino), f)
    }

    /// Drops the pieces other shards hold of a regular file whose last name
    /// went (a crash before this only leaves them for the next open's
    /// reconciliation to drop).
    fn drop_pieces(&self, gone: Option<Ino>) -> Result<()> {
        if let (Some(ino), true) = (gone, self.map.shards() > 1) {
            self.broadcast(move |s| s.unlink_part(ino))?;
        }
        Ok(())
    }

    /// Creates a regular file at `path` (its directory must exist).
    pub fn create(&self, fs: FsId, path: &str) -> Result<Ino> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| s.create(fs, &path))
    }

    /// Creates a directory at `path`.
    pub fn mkdir(&self, fs: FsId, path: &str, perm: u32) -> Result<Ino> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| s.mkdir(fs, &path, perm))
    }

    /// The inode at `path`, if any.
    pub fn lookup(&self, fs: FsId, path: &str) -> Result<Option<Ino>> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| s.lookup(fs, &path))
    }

    /// The attributes of the inode at `path`.
    pub fn stat_path(&self, fs: FsId, path: &str) -> Result<Stat> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| {
            let a = s.resolve(fs, &path)?;
            s.stat_of(a)
        })
    }

    /// Removes the entry at `path` (not a directory), with the file's data
    /// when it was its last name.
    pub fn unlink(&self, fs: FsId, path: &str) -> Result<()> {
        let path = path.to_string();
        let gone = self.call_shard(self.names_shard(fs), move |s| s.unlink(fs, &path))?;
        self.drop_pieces(gone)
    }

    /// Removes the empty directory at `path`.
    pub fn rmdir(&self, fs: FsId, path: &str) -> Result<()> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| {
            let (dir, name) = s.parent_and_name(fs, &path)?;
            s.rmdir_at(dir.ino, &name, root_ctx())
        })
    }

    /// Renames `from` to `to` (paths in file system `fs`).
    pub fn rename(&self, fs: FsId, from: &str, to: &str, flags: RenameFlags) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        let gone = self.call_shard(self.names_shard(fs), move |s| {
            let (fd, f) = s.parent_and_name(fs, &from)?;
            let (td, t) = s.parent_and_name(fs, &to)?;
            s.rename_at(fd.ino, &f, td.ino, &t, flags, root_ctx())
        })?;
        self.drop_pieces(gone)
    }

    /// The entries of the directory at `path`, with their attributes.
    pub fn list_dir(&self, fs: FsId, path: &str) -> Result<Vec<Stat>> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| s.list_dir(fs, &path))
    }

    /// Up to `max` entries of the directory at `path` after `cookie`, with
    /// their cookies.
    pub fn list_page(
        &self,
        fs: FsId,
        path: &str,
        cookie: u64,
        max: usize,
    ) -> Result<Vec<(Stat, u64)>> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| {
            s.list_page(fs, &path, cookie, max)
        })
    }

    /// A hard link: `to` names what `from` names.
    pub fn link(&self, fs: FsId, from: &str, to: &str) -> Result<Stat> {
        let (from, to) = (from.to_string(), to.to_string());
        self.call_shard(self.names_shard(fs), move |s| {
            let a = s.resolve(fs, &from)?;
            let (dir, name) = s.parent_and_name(fs, &to)?;
            let a = s.link_at(a.ino, dir.ino, &name, root_ctx())?;
            s.stat_of(a)
        })
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&self, fs: FsId, target: &str, path: &str) -> Result<Stat> {
        let (target, path) = (target.to_string(), path.to_string());
        self.call_shard(self.names_shard(fs), move |s| {
            let (dir, name) = s.parent_and_name(fs, &path)?;
            let a = s.make(
                dir.ino,
                &name,
                libc::S_IFLNK | 0o777,
                0,
                target.as_bytes(),
                root_ctx(),
            )?;
            s.stat_of(a)
        })
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink_path(&self, fs: FsId, path: &str) -> Result<Vec<u8>> {
        let path = path.to_string();
        self.call_shard(self.names_shard(fs), move |s| {
            let a = s.resolve(fs, &path)?;
            s.readlink(a.ino)
        })
    }

    /// The entries of a file system's root directory.
    pub fn list(&self, fs: FsId) -> Result<Vec<Stat>> {
        self.list_dir(fs, "")
    }

    /// The attributes of inode `ino`.
    pub fn stat(&self, ino: Ino) -> Result<Stat> {
        self.on_ino(ino, move |s| s.stat(ino))
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup_at(&self, dir: Ino, name: &[u8]) -> Result<Stat> {
        let name = name.to_vec();
        self.on_ino(dir, move |s| {
            let a = s.lookup_at(dir, &name)?;
            s.stat_of(a)
        })
    }

    /// Creates `name` in `dir`: a file, directory, symlink (to `target`) or
    /// special file by `mode`'s kind bits.
    pub fn make(
        &self,
        dir: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: &[u8],
        ctx: Ctx,
    ) -> Result<Stat> {
        let (name, target) = (name.to_vec(), target.to_vec());
        self.on_ino(dir, move |s| {
            let a = s.make(dir, &name, mode, rdev, &target, ctx)?;
            s.stat_of(a)
        })
    }

    /// Removes a non-directory entry of `dir`.
    pub fn unlink_at(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        let name = name.to_vec();
        let gone = self.on_ino(dir, move |s| s.unlink_at(dir, &name, ctx))?;
        self.drop_pieces(gone)
    }

    /// Removes an empty directory of `dir`.
    pub fn rmdir_at(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        let name = name.to_vec();
        self.on_ino(dir, move |s| s.rmdir_at(dir, &name, ctx))
    }

    /// Renames `from_dir`/`from` to `to_dir`/`to`.
    pub fn rename_at(
        &self,
        from_dir: Ino,
        from: &[u8],
        to_dir: Ino,
        to: &[u8],
        flags: RenameFlags,
        ctx: Ctx,
    ) -> Result<()> {
        if self.map.shard_of_ino(from_dir) != self.map.shard_of_ino(to_dir) {
            return Err(StoreError::Invalid {
                reason: "a rename between directories on different shards is not supported yet"
                    .into(),
            });
        }
        let (from, to) = (from.to_vec(), to.to_vec());
        let gone = self.on_ino(from_dir, move |s| {
            s.rename_at(from_dir, &from, to_dir, &to, flags, ctx)
        })?;
        self.drop_pieces(gone)
    }

    /// Gives inode `ino` the name `name` in `dir`.
    pub fn link_at(&self, ino: Ino, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Stat> {
        if self.map.shard_of_ino(ino) != self.map.shard_of_ino(dir) {
            return Err(StoreError::Invalid {
                reason: "a link into a directory on another shard is not supported yet".into(),
            });
        }
        let name = name.to_vec();
        self.on_ino(dir, move |s| {
            let a = s.link_at(ino, dir, &name, ctx)?;
            s.stat_of(a)
        })
    }

    /// Changes attributes of `ino`; a new size truncates the file on every
    /// shard holding a piece of it.
    pub fn setattr(&self, ino: Ino, mut set: SetAttr, ctx: Ctx) -> Result<Stat> {
        if let Some(size) = set.size.take() {
            // (The home refuses a directory: EISDIR.)
            self.truncate(ino, size)?;
        }
        self.on_ino(ino, move |s| {
            let a: Attr = if set == SetAttr::default() {
                s.getattr(ino)?
            } else {
                s.setattr(ino, set, ctx)?
            };
            s.stat_of(a)
        })
    }

    /// Sets an extended attribute.
    pub fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        ctx: Ctx,
    ) -> Result<()> {
        let (name, value) = (name.to_vec(), value.to_vec());
        self.on_ino(ino, move |s| s.setxattr(ino, &name, &value, mode, ctx))
    }

    /// An extended attribute's value.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let name = name.to_vec();
        self.on_ino(ino, move |s| s.getxattr(ino, &name))
    }

    /// The names of an inode's extended attributes.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.on_ino(ino, move |s| s.listxattr(ino))
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        let name = name.to_vec();
        self.on_ino(ino, move |s| s.removexattr(ino, &name, ctx))
    }

    /// Up to `max` entries of directory `dir` after `cookie`.
    pub fn readdir(&self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.on_ino(dir, move |s| s.readdir(dir, cookie, max))
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.on_ino(ino, move |s| s.readlink(ino))
    }
}

/// The caller of path-based calls (the CLI, the C ABI): root, now.
pub fn root_ctx() -> Ctx {
    Ctx {
        uid: 0,
        gid: 0,
        now: crate::store::now_nanos(),
    }
}
