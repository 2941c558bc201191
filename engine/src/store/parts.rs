//! Parts: this shard's ranges of files homed on other shards, and the
//! home's side of a write that spans shards (capacity checks, sizes) and
//! of recovery (cutting parts back to the size their home recorded).

use super::*;

impl Store {
    /// Writes a piece of file `ino` (homed on another shard, or here) that
    /// falls in one of this shard's ranges, creating the part on first use.
    /// Capacity is the home shard's to check ([`Store::check_extend`]).
    pub fn write_part(&mut self, ino: Ino, fs: FsId, offset: u64, data: &[u8]) -> Result<()> {
        if !self.meta.inodes.contains_key(&ino) {
            self.fs(fs)?;
            self.record(Record::FileCreate {
                ino,
                fs,
                name: String::new(),
            });
        }
        self.write(ino, offset, data)
    }

    /// Reads `len` bytes of a file's piece from this shard: zeros where it
    /// holds nothing.
    pub fn read_part(&mut self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        if self.meta.inodes.contains_key(&ino) {
            self.read_into(ino, offset, &mut out)?;
        }
        Ok(out)
    }

    /// Reads a file's piece from this shard like [`Store::read_part`],
    /// leaving blocks in other shards' shared pools to the caller.
    pub fn read_part_mapped(
        &mut self,
        ino: Ino,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, Vec<RemoteRead>)> {
        let mut out = vec![0u8; len];
        let mut remote = Vec::new();
        if self.meta.inodes.contains_key(&ino) {
            self.read_mapped(ino, offset, &mut out, &mut remote)?;
        }
        Ok((out, remote))
    }

    /// Drops what this shard holds of a file past `size`.
    pub fn truncate_part(&mut self, ino: Ino, size: u64) -> Result<()> {
        match self.meta.inodes.get(&ino) {
            Some(i) if i.is_part() && i.size > size => self.truncate(ino, size),
            _ => Ok(()),
        }
    }

    /// Drops what this shard holds of a removed file.
    pub fn unlink_part(&mut self, ino: Ino) -> Result<()> {
        match self.meta.inodes.get(&ino) {
            Some(i) if i.is_part() => self.unlink(ino),
            _ => Ok(()),
        }
    }

    /// Sizes of the files whose home is this shard.
    pub fn home_sizes(&self) -> Vec<(Ino, u64)> {
        self.meta
            .inodes
            .values()
            .filter(|i| !i.is_part())
            .map(|i| (i.ino, i.size))
            .collect()
    }

    /// The parts [`Store::reconcile_parts`] will cut inside a shared block:
    /// (file, size) whose block's tail the engine must zero first (this
    /// shard cannot rewrite another shard's block).
    pub fn shared_tails(&self, homes: &HashMap<Ino, u64>) -> Vec<(Ino, u64)> {
        self.meta
            .inodes
            .values()
            .filter(|i| i.is_part())
            .filter_map(|i| {
                let home = *homes.get(&i.ino)?;
                let straddle = i
                    .blocks
                    .get(&(home / BLOCK as u64))
                    .is_some_and(|b| b.owner().is_some());
                (i.size > home && straddle && !home.is_multiple_of(BLOCK as u64))
                    .then_some((i.ino, home))
            })
            .collect()
    }

    /// After a crash: cuts parts back to their file's size on its home
    /// shard and drops parts of files that no longer exist, so nothing
    /// written but never made part of the file can surface later.
    pub fn reconcile_parts(&mut self, homes: &HashMap<Ino, u64>) -> Result<()> {
        let parts: Vec<(Ino, u64)> = self
            .meta
            .inodes
            .values()
            .filter(|i| i.is_part())
            .map(|i| (i.ino, i.size))
            .collect();
        for (ino, size) in parts {
            match homes.get(&ino) {
                None => self.unlink(ino)?,
                Some(&home) if size > home => self.truncate(ino, home)?,
                Some(_) => {}
            }
        }
        self.sync()
    }

    /// On the home shard: checks that growing file `ino` to `end` bytes fits
    /// its file system's capacity; returns its file system, size, and
    /// whether the file system reduces data.
    pub fn check_extend(&self, ino: Ino, end: u64) -> Result<(FsId, u64, bool)> {
        let st = self.stat(ino)?;
        if end > st.size {
            self.check_capacity(st.fs, end - st.size)?;
        }
        Ok((st.fs, st.size, self.fs(st.fs)?.reduction))
    }

    /// On the home shard: records that file `ino` now has at least `end`
    /// bytes (its pieces were written on other shards).
    pub fn extend(&mut self, ino: Ino, end: u64) -> Result<()> {
        let st = self.stat(ino)?;
        if end > st.size {
            self.record(Record::Extents {
                ino,
                size: end,
                blocks: Vec::new(),
            });
        }
        Ok(())
    }
}
