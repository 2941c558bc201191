//! Files: create, look up, list, stat, unlink and truncate.

use super::*;

impl Store {
    /// Creates an empty file.
    pub fn create(&mut self, fs: FsId, name: &str) -> Result<Ino> {
        check_name(name)?;
        self.fs(fs)?;
        if self.lookup(fs, name)?.is_some() {
            return Err(StoreError::Exists {
                what: format!("file {name}"),
            });
        }
        // Inode numbers carry their shard in the low byte, so any core can
        // route a request for a file to its owner.
        let ino = (((self.meta.next_ino >> 8) + 1) << 8) | u64::from(self.layout.shard);
        self.record(Record::FileCreate {
            ino,
            fs,
            name: name.into(),
        })?;
        Ok(ino)
    }

    /// A file by name.
    pub fn lookup(&mut self, fs: FsId, name: &str) -> Result<Option<Ino>> {
        self.with_meta(|m, io| m.lookup(io, fs, name))
    }

    /// The files of a file system.
    pub fn list(&mut self, fs: FsId) -> Result<Vec<Stat>> {
        let mut files = Vec::new();
        self.with_meta(|m, io| {
            m.files(io, &mut |i| {
                if i.fs == fs && !i.is_part() {
                    files.push(i);
                }
                true
            })
        })?;
        files.into_iter().map(|i| self.stat_of(i)).collect()
    }

    pub(super) fn stat_of(&mut self, i: meta::Inode) -> Result<Stat> {
        let mut blocks = 0u64;
        self.with_meta(|m, io| {
            m.blocks(io, i.ino, 0, &mut |_, _| {
                blocks += 1;
                true
            })
        })?;
        Ok(Stat {
            ino: i.ino,
            fs: i.fs,
            name: i.name,
            size: i.size,
            blocks,
        })
    }

    /// A file's header.
    pub(super) fn inode(&mut self, ino: Ino) -> Result<meta::Inode> {
        self.with_meta(|m, io| m.file(io, ino))?
            .ok_or_else(|| not_found(ino))
    }

    /// Whether a file (or a part) exists on this shard.
    pub(super) fn has_file(&mut self, ino: Ino) -> Result<bool> {
        Ok(self.with_meta(|m, io| m.file(io, ino))?.is_some())
    }

    /// A file's attributes.
    pub fn stat(&mut self, ino: Ino) -> Result<Stat> {
        let i = self.inode(ino)?;
        self.stat_of(i)
    }

    /// Removes a file.
    pub fn unlink(&mut self, ino: Ino) -> Result<()> {
        self.inode(ino)?;
        self.record(Record::FileUnlink { ino })?;
        Ok(())
    }

    /// Sets a file's size (dropping blocks past it, or leaving a hole).
    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<()> {
        let st = self.inode(ino)?;
        if size > st.size {
            self.check_capacity(st.fs, size - st.size)?;
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
                })?;
            }
        }
        self.record(Record::Truncate { ino, size })?;
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
