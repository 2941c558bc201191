//! Reads: a file's blocks from the open stripe in memory or from their
//! chunks with every sector's checksum verified; runs of whole blocks
//! stored back to back are read with one device command.

use super::*;

/// A block a shard's read left to another shard's shared pool: the caller
/// fetches it from `owner` ([`Store::read_shared`]) and copies `len` bytes
/// from `skip` into its output at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRead {
    /// Byte position in the read's output.
    pub at: usize,
    /// Offset within the 4 KiB block.
    pub skip: usize,
    /// Bytes.
    pub len: usize,
    /// The shard whose pool holds the block.
    pub owner: u32,
    /// File system.
    pub fs: FsId,
    /// Its key there.
    pub key: u128,
}

/// Which stored bytes a prefetched buffer holds: stripe, chunk, offset in
/// the chunk, length.
pub(super) type AheadKey = (u64, u16, u32, u32);

fn ahead_key(a: &BlockAddr) -> AheadKey {
    (a.stripe, a.chunk, a.offset, a.stored_len)
}

/// Verify-on-hit reads for the pipeline, from the store.
pub(super) struct StoreReader<'a> {
    pub(super) store: &'a mut Store,
    pub(super) fs: FsId,
}

impl BlockReader for StoreReader<'_> {
    fn read_stored(&mut self, addr: &BlockAddr, out: &mut [u8]) -> bool {
        self.store.read_stored(self.fs, addr, out).is_ok()
    }
}

impl Store {
    /// Reads like [`Store::read_into`], but leaves blocks kept in other
    /// shards' shared pools to the caller: they are listed in `remote`
    /// (their bytes in `out` untouched).
    pub fn read_mapped(
        &mut self,
        ino: Ino,
        offset: u64,
        out: &mut [u8],
        remote: &mut Vec<RemoteRead>,
    ) -> Result<usize> {
        let size = self.size_of(ino)?;
        if offset >= size || out.is_empty() {
            return Ok(0);
        }
        let end = (offset + out.len() as u64).min(size);
        let fs = self.inode(ino)?.fs;
        // The block map of the range, looked up once.
        let (lo, hi) = (offset / BLOCK as u64, end.div_ceil(BLOCK as u64));
        let map: BTreeMap<u64, BlockRef> = self
            .with_meta(|m, io| m.blocks_in(io, ino, lo, hi))?
            .into_iter()
            .collect();
        self.prefetch_runs(fs, &map, offset, end);
        let r = self.read_mapped_runs(fs, ino, offset, end, &map, out, remote);
        self.ahead.clear();
        r
    }

    /// Fetches, all at once, the device reads `read_mapped` is about to
    /// make one after another (runs of whole blocks, single local blocks),
    /// when there are several: the devices work in parallel.
    fn prefetch_runs(&mut self, fs: FsId, map: &BTreeMap<u64, BlockRef>, offset: u64, end: u64) {
        let mut addrs = Vec::new();
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK as u64;
            let run = local_run(map, idx, pos, end);
            if run > 1 {
                let first = map[&idx];
                addrs.push(BlockAddr {
                    stored_len: (run * BLOCK) as u32,
                    ..first.addr
                });
                pos += (run * BLOCK) as u64;
                continue;
            }
            match map.get(&idx) {
                Some(b) if b.owner().is_none() => addrs.push(b.addr),
                // A block of this shard's own shared pool.
                Some(b) if b.owner() == Some(self.layout.shard) => {
                    if let Ok(sb) = self.shared_block(fs, b.fp) {
                        addrs.push(sb.addr);
                    }
                }
                _ => {}
            }
            pos = (idx + 1) * BLOCK as u64;
        }
        self.prefetch(fs, &addrs)
    }

    /// Reads the stored bytes of `addrs` from their chunks with one batch
    /// of device commands (every device at once), verifies each sector,
    /// and keeps what is intact for [`Store::read_stored`] to take. What
    /// fails or does not verify is left to the ordinary path, which
    /// rebuilds it (so nothing here fails a read).
    pub(super) fn prefetch(&mut self, fs: FsId, addrs: &[BlockAddr]) {
        if addrs.len() < 2 {
            return;
        }
        let per = self.layout.chunk_blocks as usize;
        let mut plan = Vec::with_capacity(addrs.len());
        let mut cmds = Vec::with_capacity(addrs.len());
        for a in addrs {
            let open = self
                .writers
                .get(&fs)
                .is_some_and(|w| w.pipeline.open_bytes(a).is_some());
            if open || self.ahead.contains_key(&ahead_key(a)) {
                continue;
            }
            let Ok(s) = self.stripe(a.stripe) else {
                continue;
            };
            let c = usize::from(a.chunk);
            let Some(&(d, slot)) = s.chunks.get(c) else {
                continue;
            };
            let d = usize::from(d);
            let healthy = matches!(self.devs.get(d), Some(Some(x)) if !x.failed);
            if !healthy {
                continue;
            }
            let s0 = a.offset as usize / SECTOR;
            let s1 = (a.offset as usize + a.stored_len as usize).div_ceil(SECTOR);
            let Ok(buf) = Scratch::new((s1 - s0) * SECTOR) else {
                break;
            };
            let lba = self.layout.slot_lba(slot) + s0 as u64;
            cmds.push((d, IoCmd::read(lba, (s1 - s0) as u32, buf.0.as_ptr(), 0)));
            plan.push((*a, s, s0, buf));
        }
        if cmds.len() < 2 {
            return;
        }
        let results = run_io(&mut self.devs, &cmds);
        for ((a, s, s0, buf), r) in plan.into_iter().zip(results) {
            let c = usize::from(a.chunk);
            let bytes = buf.0.as_slice();
            let good = r.is_ok()
                && bytes
                    .chunks(SECTOR)
                    .enumerate()
                    .all(|(i, x)| Xxh3Sum.checksum(SEED_CHUNK, x) == s.sums[c * per + s0 + i]);
            if good {
                let start = a.offset as usize - s0 * SECTOR;
                self.ahead.insert(
                    ahead_key(&a),
                    bytes[start..start + a.stored_len as usize].to_vec(),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_mapped_runs(
        &mut self,
        fs: FsId,
        ino: Ino,
        offset: u64,
        end: u64,
        map: &BTreeMap<u64, BlockRef>,
        out: &mut [u8],
        remote: &mut Vec<RemoteRead>,
    ) -> Result<usize> {
        let mut block = Vec::new();
        let mut pos = offset;
        // Runs are not tried again before this (one just failed).
        let mut no_runs_until = 0u64;
        while pos < end {
            let idx = pos / BLOCK as u64;
            let bstart = idx * BLOCK as u64;
            let hi = end.min(bstart + BLOCK as u64);
            let at = (pos - offset) as usize;
            // Whole uncompressed blocks stored back to back in one chunk (as
            // a sequential write leaves them): one device read for the run.
            let run = if pos >= no_runs_until {
                local_run(map, idx, pos, end)
            } else {
                0
            };
            if run > 1 {
                let first = map[&idx];
                let whole = BlockAddr {
                    stored_len: (run * BLOCK) as u32,
                    ..first.addr
                };
                if self
                    .read_stored(fs, &whole, &mut out[at..at + run * BLOCK])
                    .is_ok()
                {
                    pos += (run * BLOCK) as u64;
                    continue;
                }
                // Damage the whole run cannot be rebuilt from at once (bad
                // sectors in several chunks): block by block, each sector
                // rebuilt from what survives around it.
                no_runs_until = pos + (run * BLOCK) as u64;
            }
            let dst = &mut out[at..(hi - offset) as usize];
            let b = map.get(&idx).copied();
            match b.and_then(|b| b.owner().map(|o| (o, b.fp))) {
                Some((owner, key)) if owner != self.layout.shard => remote.push(RemoteRead {
                    at,
                    skip: (pos - bstart) as usize,
                    len: dst.len(),
                    owner,
                    fs,
                    key,
                }),
                _ if pos == bstart && hi - bstart == BLOCK as u64 => {
                    self.read_ref_block(fs, ino, idx, b, dst)?;
                }
                _ => {
                    block.resize(BLOCK, 0);
                    self.read_ref_block(fs, ino, idx, b, &mut block)?;
                    dst.copy_from_slice(&block[(pos - bstart) as usize..(hi - bstart) as usize]);
                }
            }
            pos = hi;
        }
        Ok((end - offset) as usize)
    }

    /// Reads up to `len` bytes at `offset` (less at the end of the file).
    pub fn read(&mut self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size_of(ino)?;
        let n = size.saturating_sub(offset).min(len as u64) as usize;
        let mut out = vec![0u8; n];
        self.read_into(ino, offset, &mut out)?;
        Ok(out)
    }

    /// Reads into `out` at `offset`; returns the bytes read (fewer at the
    /// end of the file). A 4 KiB-aligned `out` of whole blocks is filled
    /// straight from the device, with no copy.
    pub fn read_into(&mut self, ino: Ino, offset: u64, out: &mut [u8]) -> Result<usize> {
        let mut remote = Vec::new();
        let n = self.read_mapped(ino, offset, out, &mut remote)?;
        match remote.first() {
            None => Ok(n),
            Some(r) => Err(StoreError::Invalid {
                reason: format!(
                    "file {ino} has blocks in shard {}'s shared pool; read it through the engine",
                    r.owner
                ),
            }),
        }
    }

    pub(super) fn read_block_into(&mut self, ino: Ino, idx: u64, out: &mut [u8]) -> Result<()> {
        let fs = self.inode(ino)?.fs;
        let b = self.with_meta(|m, io| m.block(io, ino, idx))?;
        self.read_ref_block(fs, ino, idx, b, out)
    }

    /// Reads logical block `idx` of file `ino`, stored at `b` (`None`: a
    /// hole, zeros).
    fn read_ref_block(
        &mut self,
        fs: FsId,
        ino: Ino,
        idx: u64,
        b: Option<BlockRef>,
        out: &mut [u8],
    ) -> Result<()> {
        let Some(b) = b else {
            out.fill(0);
            return Ok(());
        };
        match b.owner() {
            None => self.read_ref_into(fs, b, out),
            Some(owner) if owner == self.layout.shard => self.read_shared_into(fs, b.fp, out),
            Some(owner) => Err(StoreError::Invalid {
                reason: format!(
                    "block {idx} of file {ino} is in shard {owner}'s shared pool; \
                     read it through the engine"
                ),
            }),
        }
    }

    /// Reads one stored block (decompressed) into `out`.
    pub(super) fn read_ref_into(&mut self, fs: FsId, b: BlockRef, out: &mut [u8]) -> Result<()> {
        if !b.addr.compressed {
            return self.read_stored(fs, &b.addr, out);
        }
        let mut stored = std::mem::take(&mut self.cbuf);
        stored.resize(b.addr.stored_len as usize, 0);
        let r = self.read_stored(fs, &b.addr, &mut stored).and_then(|()| {
            Lz4Probe
                .decompress(&stored, out)
                .map_err(|e| StoreError::Unrecoverable {
                    stripe: b.addr.stripe,
                    reason: e.to_string(),
                })
        });
        self.cbuf = stored;
        r
    }

    /// Reads a block's stored bytes: from the open stripe in memory, or
    /// from its chunk with checksums verified, rebuilding what is bad.
    pub(super) fn read_stored(&mut self, fs: FsId, a: &BlockAddr, out: &mut [u8]) -> Result<()> {
        if let Some(w) = self.writers.get(&fs) {
            if let Some(b) = w.pipeline.open_bytes(a) {
                out.copy_from_slice(b);
                return Ok(());
            }
        }
        if let Some(b) = self.ahead.get(&ahead_key(a)) {
            out.copy_from_slice(b);
            return Ok(());
        }
        let s0 = a.offset as usize / SECTOR;
        let s1 = (a.offset as usize + a.stored_len as usize).div_ceil(SECTOR);
        let start = a.offset as usize - s0 * SECTOR;
        let len = a.stored_len as usize;
        // Fast path: one healthy chunk read into the reused buffer, verified
        // in place, copied out once.
        let s = self.stripe(a.stripe)?;
        let c = usize::from(a.chunk);
        let (d, slot) = s.chunks[c];
        let d = usize::from(d);
        if let Some(dev) = self
            .devs
            .get_mut(d)
            .and_then(|x| x.as_mut())
            .filter(|x| !x.failed)
        {
            let n = s1 - s0;
            let per = self.layout.chunk_blocks as usize;
            let verify = |bytes: &[u8]| {
                bytes
                    .chunks(SECTOR)
                    .enumerate()
                    .all(|(i, x)| Xxh3Sum.checksum(SEED_CHUNK, x) == s.sums[c * per + s0 + i])
            };
            let lba = self.layout.slot_lba(slot) + s0 as u64;
            if start == 0 && len == n * SECTOR && (out.as_ptr() as usize).is_multiple_of(4096) {
                let r = run_one(dev, IoCmd::read(lba, n as u32, out.as_mut_ptr(), 0));
                if r.is_ok() && verify(out) {
                    return Ok(());
                }
                if r.is_err() {
                    self.mark_failed(d, "chunk read");
                }
                let sectors = self.read_sectors(a.stripe, c, s0, s1)?;
                out.copy_from_slice(&sectors[..len]);
                return Ok(());
            }
            let buf = match self.rbuf.take() {
                Some(b) if b.0.len >= n * SECTOR => b,
                _ => Scratch::new(n * SECTOR)?,
            };
            let r = run_one(dev, IoCmd::read(lba, n as u32, buf.0.as_ptr(), 0));
            let bytes = &buf.0.as_slice()[..n * SECTOR];
            let good = r.is_ok() && verify(bytes);
            if good {
                out.copy_from_slice(&bytes[start..start + len]);
            }
            self.rbuf = Some(buf);
            if good {
                return Ok(());
            }
            if r.is_err() {
                self.mark_failed(d, "chunk read");
            }
        }
        let sectors = self.read_sectors(a.stripe, c, s0, s1)?;
        out.copy_from_slice(&sectors[start..start + len]);
        Ok(())
    }

    pub(super) fn stripe(&mut self, id: u64) -> Result<Arc<StripeMeta>> {
        self.with_meta(|m, io| m.stripe(io, id))?
            .ok_or_else(|| StoreError::Unrecoverable {
                stripe: id,
                reason: "stripe missing from metadata".into(),
            })
    }
}

/// How many whole blocks from logical block `idx` (at byte `pos`, before
/// `end`) are local, uncompressed and stored back to back in one chunk,
/// by the block map `map` of the range.
fn local_run(map: &BTreeMap<u64, BlockRef>, idx: u64, pos: u64, end: u64) -> usize {
    let b64 = BLOCK as u64;
    if pos != idx * b64 {
        return 0;
    }
    let plain = |b: &BlockRef| {
        b.owner().is_none() && !b.addr.compressed && b.addr.stored_len == BLOCK as u32
    };
    let Some(first) = map.get(&idx).filter(|b| plain(b)) else {
        return 0;
    };
    let mut n = 0u64;
    while (idx + n + 1) * b64 <= end && ((n + 1) * b64) as usize <= MAX_IO {
        match map.get(&(idx + n)) {
            Some(b)
                if plain(b)
                    && b.addr.stripe == first.addr.stripe
                    && b.addr.chunk == first.addr.chunk
                    && u64::from(b.addr.offset) == u64::from(first.addr.offset) + n * b64 =>
            {
                n += 1;
            }
            _ => break,
        }
    }
    n as usize
}
