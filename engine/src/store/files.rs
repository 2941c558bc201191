//! Files by path (create, look up, stat, unlink) on top of the
//! namespace, and a file's size (truncate), with the data a shard holds.

use super::*;
use crate::meta::namespace::{Attr, Ctx};

/// The caller of the store's path-based calls: root, now.
fn root_ctx() -> Ctx {
    Ctx {
        uid: 0,
        gid: 0,
        now: now_nanos(),
    }
}

impl Store {
    /// Creates an empty regular file at `path` (its directory must exist).
    pub fn create(&mut self, fs: FsId, path: &str) -> Result<Ino> {
        let (dir, name) = self.parent_and_name(fs, path)?;
        match self.make(dir.ino, &name, libc::S_IFREG | 0o644, 0, &[], root_ctx()) {
            Ok(a) => Ok(a.ino),
            Err(StoreError::Ns(meta::namespace::NsError::Exists)) => Err(StoreError::Exists {
                what: format!("file {path}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory at `path`.
    pub fn mkdir(&mut self, fs: FsId, path: &str, perm: u32) -> Result<Ino> {
        let (dir, name) = self.parent_and_name(fs, path)?;
        Ok(self
            .make(dir.ino, &name, libc::S_IFDIR | perm, 0, &[], root_ctx())?
            .ino)
    }

    /// The inode at `path`, if there is one.
    pub fn lookup(&mut self, fs: FsId, path: &str) -> Result<Option<Ino>> {
        match self.resolve(fs, path) {
            Ok(a) => Ok(Some(a.ino)),
            Err(StoreError::Ns(meta::namespace::NsError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the entry at `path` (not a directory); returns the regular
    /// file whose last name it was.
    pub fn unlink(&mut self, fs: FsId, path: &str) -> Result<Option<Ino>> {
        let (dir, name) = self.parent_and_name(fs, path)?;
        self.unlink_at(dir.ino, &name, root_ctx())
    }

    /// The logical blocks this shard maps of file `ino` (its inode's or a
    /// part's).
    pub fn blocks_held(&mut self, ino: Ino) -> Result<u64> {
        let mut blocks = 0u64;
        self.with_meta(|m, io| {
            m.blocks(io, ino, 0, &mut |_, _| {
                blocks += 1;
                true
            })
        })?;
        Ok(blocks)
    }

    /// An inode's attributes as `stat` reports them.
    pub fn stat_of(&self, a: Attr) -> Result<Stat> {
        let blocks = a.blocks;
        debug_assert!(a.kind == meta::namespace::Kind::File || blocks == 0);
        Ok(Stat {
            ino: a.ino,
            fs: a.fs,
            name: String::new(),
            size: a.size,
            blocks,
            mode: a.mode(),
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            generation: a.generation,
            parent: a.parent,
        })
    }

    /// A regular file (or a part of one) on this shard.
    pub(super) fn inode(&mut self, ino: Ino) -> Result<meta::Inode> {
        if let Some(i) = self.with_meta(|m, io| m.file(io, ino))? {
            return Ok(i);
        }
        match self.with_meta(|m, io| m.attr(io, ino))? {
            Some(a) if a.kind == meta::namespace::Kind::Dir => {
                Err(StoreError::Ns(meta::namespace::NsError::IsDir))
            }
            Some(_) => Err(StoreError::Invalid {
                reason: format!("inode {ino} is not a regular file"),
            }),
            None => Err(not_found(ino)),
        }
    }

    /// Whether this shard holds any of regular file `ino` (its inode or a
    /// part).
    pub fn has_file(&mut self, ino: Ino) -> Result<bool> {
        Ok(self.with_meta(|m, io| m.file(io, ino))?.is_some())
    }

    /// An inode's attributes.
    pub fn stat(&mut self, ino: Ino) -> Result<Stat> {
        let a = self.getattr(ino)?;
        self.stat_of(a)
    }

    /// Drops this shard's part of a file (its home removed it).
    pub(super) fn drop_part(&mut self, ino: Ino) -> Result<()> {
        self.record(Record::PartDrop { ino })?;
        Ok(())
    }

    /// Sets a file's size (dropping blocks past it, or leaving a hole).
    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<()> {
        self.truncate_at(ino, size, now_nanos())
    }

    /// Sets a file's size; its mtime and ctime become `now`.
    pub(super) fn truncate_at(&mut self, ino: Ino, size: u64, now: i64) -> Result<()> {
        let st = self.inode(ino)?;
        if size > st.size && !st.part {
            let f = self.fs(st.fs)?;
            if size > f.capacity {
                return Err(StoreError::TooLarge {
                    what: format!(
                        "{size} bytes is more than file system {}'s capacity of {} bytes; \
                         raise its capacity",
                        f.name, f.capacity
                    ),
                });
            }
            self.check_capacity(st.fs, size - st.size)?;
            self.check_quota(st.quota, size - st.size)?;
        }
        // The block straddling the new end keeps only bytes before it.
        if !size.is_multiple_of(BLOCK as u64) && size < st.size {
            let idx = size / BLOCK as u64;
            // (A shared block's tail is the engine's to rewrite.)
            let local = self
                .with_meta(|m, io| m.block(io, ino, idx))?
                .is_some_and(|b| b.owner().is_none());
            if local {
                let mut block = vec![0u8; BLOCK];
                self.read_block_into(ino, idx, &mut block)?;
                block[(size % BLOCK as u64) as usize..].fill(0);
                let r = self.store_blocks(st.fs, &[(idx, &block[..])])?;
                self.record(Record::Extents {
                    ino,
                    size: st.size,
                    blocks: r,
                    mtime: 0,
                })?;
            }
        }
        self.record(Record::Truncate {
            ino,
            size,
            mtime: now,
        })?;
        Ok(())
    }

    pub(super) fn check_capacity(&self, fs: FsId, grow: u64) -> Result<()> {
        let f = self.fs(fs)?;
        let used = self.meta.fs_used(fs);
        if used + grow > f.capacity {
            return Err(StoreError::NoSpace {
                what: format!(
                    "file system {} is at its capacity of {} bytes ({} used); \
                     raise it or delete files",
                    f.name, f.capacity, used
                ),
            });
        }
        Ok(())
    }

    pub(super) fn size_of(&mut self, ino: Ino) -> Result<u64> {
        Ok(self.inode(ino)?.size)
    }
}
