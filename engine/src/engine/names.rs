//! The namespace through the engine. An entry lives on the shard of its
//! directory (inode numbers carry their shard) and new files on their
//! directory's shard, so create, lookup, getattr, readdir and
//! same-directory rename run on one reactor. A new directory is homed on
//! a shard its parent and name hash to, so a tree's directories, and the
//! files in them, spread over every shard. Paths resolve shard by shard,
//! each hop resolving what its shard holds. An operation that needs
//! inodes of two shards is refused whole by the first
//! ([`NsError::Remote`]) and runs as an intent instead (`span.rs`).

use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::snap::{retag, retag_stat};
use super::*;
use crate::meta::namespace::{Attr, Ctx, DirEntry, Kind, NsError, RenameFlags, SetAttr, XattrMode};
use crate::meta::snap::is_view;
use crate::store::{components, Walk};

/// Most shard hops one path resolution takes (each resolves at least one
/// component or follows a symlink).
const MAX_HOPS: usize = 1 << 16;

/// A walk's step on one shard: the result, or the walk to go on with on
/// another shard.
enum Hop<R> {
    Done(R),
    Away(Walk),
}

/// The result of a change tried on one shard: done, or it needs the
/// inodes of other shards (the directory it ran in, for the intent).
type Tried<R> = std::result::Result<R, Ino>;

/// Maps a refusal for needing another shard's inode to [`Tried`]'s
/// `Err(dir)`.
fn tried<R>(dir: Ino, r: Result<R>) -> Result<Tried<R>> {
    match r {
        Err(StoreError::Ns(NsError::Remote(_))) => Ok(Err(dir)),
        r => r.map(Ok),
    }
}

/// A path's parent components and last name; the root has none.
fn split(path: &str) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut comps = components(path.as_bytes());
    match comps.pop() {
        Some(name) => Ok((comps, name)),
        None => Err(StoreError::Invalid {
            reason: format!("path {path:?} names no entry (it is the root)"),
        }),
    }
}

impl Engine {
    /// The root directory of file system `fs`.
    pub fn root_of(&self, fs: FsId) -> Ino {
        crate::meta::root_ino(fs, self.map.shards())
    }

    /// Holds off operations spanning shards while one runs on a shard.
    pub(super) fn names_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.names.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the namespace still for an operation spanning shards.
    pub(super) fn names_alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.names.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard a new directory `name` in `dir` is homed on.
    pub(super) fn home_of_dir(&self, dir: Ino, name: &[u8]) -> u32 {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(name, dir);
        (h % u64::from(self.map.shards())) as u32
    }

    /// Runs `f` on the shard holding inode `ino`.
    pub(super) fn on_ino<R: Send + 'static>(
        &self,
        ino: Ino,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.call_shard(self.map.shard_of_ino(ino), f)
    }

    /// An inode's attributes, from the shard holding it.
    pub(super) fn attr(&self, ino: Ino) -> Result<Attr> {
        self.on_view(ino, move |s, ino| s.getattr(ino))
    }

    /// Drops the pieces other shards hold of regular files whose last name
    /// went (a crash before this only leaves them for the next open's
    /// reconciliation to drop).
    pub(super) fn drop_pieces(&self, gone: impl IntoIterator<Item = Ino>) -> Result<()> {
        if self.map.shards() > 1 {
            for ino in gone {
                self.broadcast(move |s| s.unlink_part(ino))?;
            }
        }
        Ok(())
    }

    /// Resolves `comps` from `fs`'s root, shard by shard, then runs `then`
    /// with the inode reached on the shard holding it, in the same call.
    fn walk_then<R: Send + 'static>(
        &self,
        fs: FsId,
        comps: Vec<Vec<u8>>,
        then: impl Fn(&mut Store, Attr) -> Result<R> + Clone + Send + 'static,
    ) -> Result<R> {
        let mut w = Walk::from(self.root_of(fs), comps);
        for _ in 0..MAX_HOPS {
            let then = then.clone();
            let hop = self.on_ino(w.at, move |s| {
                Ok(match s.walk_on(fs, w)? {
                    Ok(a) => Hop::Done(then(s, a)),
                    Err(w) => Hop::Away(w),
                })
            })?;
            match hop {
                Hop::Done(r) => return r,
                Hop::Away(next) => w = next,
            }
        }
        Err(StoreError::Invalid {
            reason: format!("a path resolution crossed shards more than {MAX_HOPS} times"),
        })
    }

    /// Runs `op` with the directory holding `path`'s last component and
    /// that name, on the shard holding the directory.
    fn at_parent<R: Send + 'static>(
        &self,
        fs: FsId,
        path: &str,
        op: impl Fn(&mut Store, Ino, &[u8]) -> Result<Tried<R>> + Clone + Send + Sync + 'static,
    ) -> Result<(Tried<R>, Vec<u8>)> {
        let (comps, name) = split(path)?;
        let n = name.clone();
        let r = self.walk_then(fs, comps, move |s, dir| {
            if dir.kind != Kind::Dir {
                return Err(StoreError::Ns(NsError::NotDir));
            }
            op(s, dir.ino, &n)
        })?;
        Ok((r, name))
    }

    /// The directory holding `path`'s last component, and that name.
    fn parent_of(&self, fs: FsId, path: &str) -> Result<(Ino, Vec<u8>)> {
        let (r, name) = self.at_parent(fs, path, |_, dir, _| Ok(Ok(dir)))?;
        Ok((r.unwrap_or_else(|dir| dir), name))
    }

    /// The attributes of what `path` names (a last symlink not followed).
    pub(super) fn resolve(&self, fs: FsId, path: &str) -> Result<Attr> {
        self.walk_then(fs, components(path.as_bytes()), |_, a| Ok(a))
    }

    /// Creates a regular file at `path` (its directory must exist).
    pub fn create(&self, fs: FsId, path: &str) -> Result<Ino> {
        let _shared = self.names_shared();
        let made = self.at_parent(fs, path, |s, dir, name| {
            let a = s.make(dir, name, libc::S_IFREG | 0o644, 0, &[], root_ctx());
            tried(dir, a.and_then(|a| Ok((a.ino, s.receipt(dir)?))))
        });
        match made {
            Ok((Ok((ino, receipt)), _)) => self.redeem([receipt]).map(|()| ino),
            Ok((Err(_), _)) => Err(StoreError::Invalid {
                reason: "a new file's directory moved to another shard".into(),
            }),
            Err(StoreError::Ns(NsError::Exists)) => Err(StoreError::Exists {
                what: format!("file {path}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory at `path`.
    pub fn mkdir(&self, fs: FsId, path: &str, perm: u32) -> Result<Ino> {
        let (dir, name) = self.parent_of(fs, path)?;
        Ok(self
            .make(
                dir,
                &name,
                libc::S_IFDIR | (perm & 0o7777),
                0,
                &[],
                root_ctx(),
            )?
            .ino)
    }

    /// The inode at `path`, if any.
    pub fn lookup(&self, fs: FsId, path: &str) -> Result<Option<Ino>> {
        match self.resolve(fs, path) {
            Ok(a) => Ok(Some(a.ino)),
            Err(StoreError::Ns(NsError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The attributes of the inode at `path`.
    pub fn stat_path(&self, fs: FsId, path: &str) -> Result<Stat> {
        self.walk_then(fs, components(path.as_bytes()), |s, a| s.stat_of(a))
    }

    /// Removes the entry at `path` (not a directory), with the file's data
    /// when it was its last name.
    pub fn unlink(&self, fs: FsId, path: &str) -> Result<()> {
        let shared = self.names_shared();
        let (r, name) = self.at_parent(fs, path, |s, dir, name| {
            tried(
                dir,
                s.unlink_at(dir, name, root_ctx())
                    .and_then(|gone| Ok((gone, s.receipt(dir)?))),
            )
        })?;
        drop(shared);
        match r {
            Ok((gone, receipt)) => {
                self.redeem([receipt])?;
                self.drop_pieces(gone)
            }
            Err(dir) => self.span_unlink(dir, &name, root_ctx()),
        }
    }

    /// Removes the empty directory at `path`.
    pub fn rmdir(&self, fs: FsId, path: &str) -> Result<()> {
        let shared = self.names_shared();
        let (r, name) = self.at_parent(fs, path, |s, dir, name| {
            tried(
                dir,
                s.rmdir_at(dir, name, root_ctx())
                    .and_then(|()| s.receipt(dir)),
            )
        })?;
        drop(shared);
        match r {
            Ok(receipt) => self.redeem([receipt]),
            Err(dir) => self.span_rmdir(dir, &name, root_ctx()),
        }
    }

    /// Renames `from` to `to` (paths in file system `fs`).
    pub fn rename(&self, fs: FsId, from: &str, to: &str, flags: RenameFlags) -> Result<()> {
        let (fd, f) = self.parent_of(fs, from)?;
        let (td, t) = self.parent_of(fs, to)?;
        if self.attr(td)?.kind != Kind::Dir {
            return Err(StoreError::Ns(NsError::NotDir));
        }
        self.rename_at(fd, &f, td, &t, flags, root_ctx())
    }

    /// The entries of the directory at `path`, with their attributes.
    pub fn list_dir(&self, fs: FsId, path: &str) -> Result<Vec<Stat>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let page = self.list_page(fs, path, cookie, 1024)?;
            let Some(&(_, last)) = page.last() else {
                break;
            };
            cookie = last;
            out.extend(page.into_iter().map(|(st, _)| st));
        }
        Ok(out)
    }

    /// Up to `max` entries of the directory at `path` after `cookie`, with
    /// their attributes (from the shards holding them) and cookies.
    pub fn list_page(
        &self,
        fs: FsId,
        path: &str,
        cookie: u64,
        max: usize,
    ) -> Result<Vec<(Stat, u64)>> {
        let page = self.walk_then(fs, components(path.as_bytes()), move |s, a| {
            s.readdir_plus(a.ino, cookie, max)
        })?;
        self.with_stats(page)
    }

    /// Fills in the attributes of entries whose inodes other shards hold,
    /// one call per shard; an entry whose inode went meanwhile is left out.
    fn with_stats(&self, page: Vec<(DirEntry, Option<Stat>)>) -> Result<Vec<(Stat, u64)>> {
        let mut want: HashMap<u32, Vec<Ino>> = HashMap::new();
        for (e, st) in &page {
            if st.is_none() {
                want.entry(self.map.shard_of_ino(e.ino))
                    .or_default()
                    .push(e.ino);
            }
        }
        let mut got: HashMap<Ino, Stat> = HashMap::new();
        for (shard, inos) in want {
            let stats = self.call_shard(shard, move |s| {
                let st = s.stats(&inos)?;
                Ok(inos.into_iter().zip(st).collect::<Vec<_>>())
            })?;
            got.extend(stats.into_iter().filter_map(|(i, s)| Some((i, s?))));
        }
        Ok(page
            .into_iter()
            .filter_map(|(e, st)| {
                let mut st = st.or_else(|| got.get(&e.ino).cloned())?;
                st.name = String::from_utf8_lossy(&e.name).into_owned();
                Some((st, e.cookie))
            })
            .collect())
    }

    /// A hard link: `to` names what `from` names.
    pub fn link(&self, fs: FsId, from: &str, to: &str) -> Result<Stat> {
        let a = self.resolve(fs, from)?;
        let (dir, name) = self.parent_of(fs, to)?;
        self.link_at(a.ino, dir, &name, root_ctx())
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&self, fs: FsId, target: &str, path: &str) -> Result<Stat> {
        let (dir, name) = self.parent_of(fs, path)?;
        self.make(
            dir,
            &name,
            libc::S_IFLNK | 0o777,
            0,
            target.as_bytes(),
            root_ctx(),
        )
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink_path(&self, fs: FsId, path: &str) -> Result<Vec<u8>> {
        self.walk_then(fs, components(path.as_bytes()), |s, a| s.readlink(a.ino))
    }

    /// The entries of a file system's root directory.
    pub fn list(&self, fs: FsId) -> Result<Vec<Stat>> {
        self.list_dir(fs, "")
    }

    /// The attributes of inode `ino`.
    pub fn stat(&self, ino: Ino) -> Result<Stat> {
        let st = self.on_view(ino, move |s, ino| s.stat(ino))?;
        Ok(retag_stat(ino, st))
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup_at(&self, dir: Ino, name: &[u8]) -> Result<Stat> {
        let name = name.to_vec();
        let r = self.on_view(dir, move |s, dir| {
            let (ino, _) = s
                .entry_of(dir, &name)?
                .ok_or(StoreError::Ns(NsError::NotFound))?;
            tried(ino, s.getattr(ino).and_then(|a| s.stat_of(a)))
        })?;
        match r {
            Ok(st) => Ok(retag_stat(dir, st)),
            Err(ino) => self.stat(retag(dir, ino)),
        }
    }

    /// Creates `name` in `dir`: a file, directory, symlink (to `target`) or
    /// special file by `mode`'s kind bits. A directory is homed on the
    /// shard its parent and name hash to.
    pub fn make(
        &self,
        dir: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: &[u8],
        ctx: Ctx,
    ) -> Result<Stat> {
        self.writable(dir)?;
        if Kind::from_mode(mode) == Some(Kind::Dir)
            && self.home_of_dir(dir, name) != self.map.shard_of_ino(dir)
        {
            return self.span_mkdir(dir, name, mode, ctx);
        }
        let (name, target) = (name.to_vec(), target.to_vec());
        let _shared = self.names_shared();
        self.durably(self.map.shard_of_ino(dir), dir, move |s| {
            let a = s.make(dir, &name, mode, rdev, &target, ctx)?;
            s.stat_of(a)
        })
    }

    /// Removes a non-directory entry of `dir`.
    pub fn unlink_at(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        self.writable(dir)?;
        let n = name.to_vec();
        let shared = self.names_shared();
        let r = self.on_ino(dir, move |s| {
            tried(
                dir,
                s.unlink_at(dir, &n, ctx)
                    .and_then(|gone| Ok((gone, s.receipt(dir)?))),
            )
        })?;
        drop(shared);
        match r {
            Ok((gone, receipt)) => {
                self.redeem([receipt])?;
                self.drop_pieces(gone)
            }
            Err(_) => self.span_unlink(dir, name, ctx),
        }
    }

    /// Removes an empty directory of `dir`.
    pub fn rmdir_at(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        self.writable(dir)?;
        let n = name.to_vec();
        let shared = self.names_shared();
        let r = self.on_ino(dir, move |s| {
            tried(dir, s.rmdir_at(dir, &n, ctx).and_then(|()| s.receipt(dir)))
        })?;
        drop(shared);
        match r {
            Ok(receipt) => self.redeem([receipt]),
            Err(_) => self.span_rmdir(dir, name, ctx),
        }
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
        self.writable(from_dir)?;
        self.writable(to_dir)?;
        if self.map.shard_of_ino(from_dir) == self.map.shard_of_ino(to_dir) {
            let (f, t) = (from.to_vec(), to.to_vec());
            let shared = self.names_shared();
            let r = self.on_ino(from_dir, move |s| {
                tried(
                    from_dir,
                    s.rename_at(from_dir, &f, to_dir, &t, flags, ctx)
                        .and_then(|gone| Ok((gone, s.receipt(from_dir)?))),
                )
            })?;
            drop(shared);
            if let Ok((gone, receipt)) = r {
                self.redeem([receipt])?;
                return self.drop_pieces(gone);
            }
        }
        self.span_rename(from_dir, from, to_dir, to, flags, ctx)
    }

    /// Gives inode `ino` the name `name` in `dir`.
    pub fn link_at(&self, ino: Ino, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Stat> {
        self.writable(ino)?;
        self.writable(dir)?;
        if self.map.shard_of_ino(ino) != self.map.shard_of_ino(dir) {
            return self.span_link(ino, dir, name, ctx);
        }
        let name = name.to_vec();
        let _shared = self.names_shared();
        self.durably(self.map.shard_of_ino(dir), dir, move |s| {
            let a = s.link_at(ino, dir, &name, ctx)?;
            s.stat_of(a)
        })
    }

    /// Changes attributes of `ino`; a new size truncates the file on every
    /// shard holding a piece of it.
    pub fn setattr(&self, ino: Ino, mut set: SetAttr, ctx: Ctx) -> Result<Stat> {
        if is_view(ino) && set == SetAttr::default() {
            return self.stat(ino);
        }
        self.writable(ino)?;
        if let Some(size) = set.size.take() {
            // (The home refuses a directory: EISDIR.)
            self.truncate(ino, size)?;
        }
        let _shared = self.names_shared();
        self.durably(self.map.shard_of_ino(ino), ino, move |s| {
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
        self.writable(ino)?;
        let (name, value) = (name.to_vec(), value.to_vec());
        self.durably(self.map.shard_of_ino(ino), ino, move |s| {
            s.setxattr(ino, &name, &value, mode, ctx)
        })
    }

    /// An extended attribute's value.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let name = name.to_vec();
        self.on_view(ino, move |s, ino| s.getxattr(ino, &name))
    }

    /// The names of an inode's extended attributes.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.on_view(ino, move |s, ino| s.listxattr(ino))
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        self.writable(ino)?;
        let name = name.to_vec();
        self.durably(self.map.shard_of_ino(ino), ino, move |s| {
            s.removexattr(ino, &name, ctx)
        })
    }

    /// Up to `max` entries of directory `dir` after `cookie`.
    pub fn readdir(&self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        let mut out = self.on_view(dir, move |s, dir| s.readdir(dir, cookie, max))?;
        for e in &mut out {
            e.ino = retag(dir, e.ino);
        }
        Ok(out)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.on_view(ino, move |s, ino| s.readlink(ino))
    }

    /// Checks every file system's namespace across all shards together
    /// (entries naming inodes of other shards included); returns what is
    /// wrong.
    pub fn fsck_names(&self) -> Result<Vec<String>> {
        let facts = self.broadcast(|s| s.ns_facts())?;
        Ok(crate::meta::namespace::check(&facts))
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
