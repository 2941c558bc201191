//! Parts: this shard's ranges of files homed on other shards, and the
//! home's side of a write that spans shards (capacity checks, sizes) and
//! of recovery (cutting parts back to the size their home recorded).

use super::*;

impl Store {
    /// Creates the part of file `ino` of file system `fs` on this shard
    /// unless the file (or a part of it) is already here.
    pub(super) fn ensure_part(&mut self, ino: Ino, fs: FsId) -> Result<()> {
        if !self.has_file(ino)? {
            self.fs(fs)?;
            self.record(Record::PartCreate { ino, fs })?;
        }
        Ok(())
    }

    /// Writes a piece of file `ino` (homed on another shard, or here) that
    /// falls in one of this shard's ranges, creating the part on first use.
    /// Capacity is the home shard's to check ([`Store::check_extend`]).
    pub fn write_part(&mut self, ino: Ino, fs: FsId, offset: u64, data: &[u8]) -> Result<()> {
        self.ensure_part(ino, fs)?;
        self.write(ino, offset, data)
    }

    /// Reads `len` bytes of a file's piece from this shard: zeros where it
    /// holds nothing.
    pub fn read_part(&mut self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        if self.has_file(ino)? {
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
        if self.has_file(ino)? {
            self.read_mapped(ino, offset, &mut out, &mut remote)?;
        }
        Ok((out, remote))
    }

    /// Drops what this shard holds of a file past `size`.
    pub fn truncate_part(&mut self, ino: Ino, size: u64) -> Result<()> {
        match self.with_meta(|m, io| m.file(io, ino))? {
            Some(i) if i.is_part() && i.size > size => self.truncate(ino, size),
            _ => Ok(()),
        }
    }

    /// Drops what this shard holds of a removed file.
    pub fn unlink_part(&mut self, ino: Ino) -> Result<()> {
        match self.with_meta(|m, io| m.file(io, ino))? {
            Some(i) if i.is_part() => self.drop_part(ino),
            _ => Ok(()),
        }
    }

    /// Whether this shard's maps or pool may hold shared blocks: a file
    /// system reduces data, or the pool is not empty.
    pub fn shares_blocks(&self) -> bool {
        self.meta.shared_len() > 0 || self.meta.fss.values().any(|f| f.reduction)
    }

    /// This shard's parts: (file, size of the part).
    pub fn part_sizes(&mut self) -> Result<Vec<(Ino, u64)>> {
        let mut out = Vec::new();
        self.with_meta(|m, io| {
            m.parts(io, &mut |i| {
                out.push((i.ino, i.size));
                true
            })
        })?;
        Ok(out)
    }

    /// The sizes of files homed here (`None`: no such file any more).
    pub fn home_sizes(&mut self, inos: &[Ino]) -> Result<Vec<Option<u64>>> {
        inos.iter()
            .map(|&ino| {
                let i = self.with_meta(|m, io| m.file(io, ino))?;
                Ok(i.filter(|i| !i.is_part()).map(|i| i.size))
            })
            .collect()
    }

    /// The parts [`Store::reconcile_parts`] will cut inside a shared block:
    /// (file, size) whose block's tail the engine must zero first (this
    /// shard cannot rewrite another shard's block).
    pub fn shared_tails(&mut self, homes: &HashMap<Ino, u64>) -> Result<Vec<(Ino, u64)>> {
        let mut out = Vec::new();
        for (ino, size) in self.part_sizes()? {
            let Some(&home) = homes.get(&ino) else {
                continue;
            };
            if size <= home || home.is_multiple_of(BLOCK as u64) {
                continue;
            }
            let idx = home / BLOCK as u64;
            let straddle = self
                .with_meta(|m, io| m.block(io, ino, idx))?
                .is_some_and(|b| b.owner().is_some());
            if straddle {
                out.push((ino, home));
            }
        }
        Ok(out)
    }

    /// After a crash: cuts parts back to their file's size on its home
    /// shard and drops parts of files that no longer exist, so nothing
    /// written but never made part of the file can surface later.
    pub fn reconcile_parts(&mut self, homes: &HashMap<Ino, u64>) -> Result<()> {
        for (ino, size) in self.part_sizes()? {
            match homes.get(&ino) {
                None => self.drop_part(ino)?,
                Some(&home) if size > home => self.truncate(ino, home)?,
                Some(_) => {}
            }
        }
        self.sync()
    }

    /// On the home shard: checks that growing file `ino` to `end` bytes fits
    /// its file system's capacity; returns its file system, size, and
    /// whether the file system reduces data.
    pub fn check_extend(&mut self, ino: Ino, end: u64) -> Result<(FsId, u64, bool)> {
        let st = self.inode(ino)?;
        if end > st.size {
            self.check_capacity(st.fs, end - st.size)?;
            self.check_quota(st.quota, end - st.size)?;
        }
        Ok((st.fs, st.size, self.fs(st.fs)?.reduction))
    }

    /// The file system of file `ino` (its inode or part here).
    pub fn fs_of_file(&mut self, ino: Ino) -> Result<FsId> {
        Ok(self.inode(ino)?.fs)
    }

    /// On the home shard: records that file `ino` now has at least `end`
    /// bytes (its pieces were written on other shards).
    pub fn extend(&mut self, ino: Ino, end: u64) -> Result<()> {
        let st = self.inode(ino)?;
        if end > st.size {
            self.record(Record::Extents {
                ino,
                size: end,
                blocks: Vec::new(),
                mtime: now_nanos(),
            })?;
        }
        Ok(())
    }
}
