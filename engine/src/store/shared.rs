//! The shared pool: this shard's part of the engine-wide dedup index.
//! Blocks whose fingerprints this shard owns are stored here once, and
//! block maps on every shard refer to them by (owner, key).

use super::*;

/// How many shared-block records every shard of an engine has journaled
/// this session, shared by the engine's stores: a record that refers to
/// another shard's shared block waits until that shard has journaled the
/// record that put the block there.
#[derive(Debug)]
pub struct Journaled(Vec<AtomicU64>);

impl Journaled {
    /// A table for `shards` shards, all at zero.
    pub fn new(shards: u32) -> Arc<Journaled> {
        Arc::new(Journaled((0..shards).map(|_| AtomicU64::new(0)).collect()))
    }

    /// Records shard `shard` has journaled.
    pub fn get(&self, shard: u32) -> u64 {
        self.0
            .get(shard as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    pub(super) fn set(&self, shard: u32, n: u64) {
        if let Some(a) = self.0.get(shard as usize) {
            a.store(n, Ordering::Release);
        }
    }
}

/// A reference to another shard's shared block that a record dropped: the
/// owner is told once the record is durable.
pub type SharedDrop = (u32, FsId, u128);

impl Store {
    /// Gives this store every shard's journal progress (the engine does, on
    /// open).
    pub fn set_peers(&mut self, peers: Arc<Journaled>) {
        peers.set(self.layout.shard, self.puts_journaled);
        self.peers = Some(peers);
    }

    /// Stores whole 4 KiB blocks in this shard's shared pool, the blocks
    /// whose fingerprints this shard owns: each is deduplicated against
    /// everything the shard stores (verify-on-hit), compressed and packed
    /// like any block, and counts one more reference. Returns each block's
    /// key and how many shared-block records this shard must have journaled
    /// before a record referring to the keys may be journaled anywhere.
    pub fn put_shared(&mut self, fs: FsId, data: &[u8]) -> Result<(Vec<u128>, u64)> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shared blocks must be whole 4 KiB blocks, not {} bytes",
                    data.len()
                ),
            });
        }
        self.fs(fs)?;
        self.check_meta_room()?;
        let mut keys = Vec::with_capacity(data.len() / BLOCK);
        let mut need = 0;
        for block in data.chunks(BLOCK) {
            let (addr, fp) = self.place(fs, &mut |p, reader, sink| {
                let addr = match p.write_block(fs, block, reader, sink) {
                    Placed::Dup(a) | Placed::New(a) => a,
                };
                (addr, p.last_fingerprint().unwrap_or(0))
            })?;
            let entry = match fp {
                0 => None,
                _ => self.with_meta(|m, io| m.shared(io, fs, fp))?,
            };
            let key = match entry {
                Some(e) if e.addr == addr => {
                    // A hit on the pool's own block: the entry already holds
                    // the index reference the pipeline just added.
                    if let Some(w) = self.writers.get_mut(&fs) {
                        w.pipeline.index_mut().drop_ref(fs, fp);
                    }
                    if let Some(&n) = self.put_at.get(&(fs, fp)) {
                        need = need.max(n);
                    }
                    fp
                }
                _ => {
                    let key =
                        if fp != 0 && entry.is_none() && !self.dropping.contains_key(&(fs, fp)) {
                            fp
                        } else {
                            // Not deduplicable under its fingerprint (a verified
                            // collision): a key of its own, from its first
                            // address, which no other block ever has.
                            let mut k = (1u128 << 127)
                                | u128::from(addr.stripe) << 48
                                | u128::from(addr.chunk) << 32
                                | u128::from(addr.offset);
                            while self.with_meta(|m, io| m.shared(io, fs, k))?.is_some()
                                || self.dropping.contains_key(&(fs, k))
                            {
                                k = k.wrapping_add(1 << 96);
                            }
                            k
                        };
                    *self.refs.entry(addr.stripe).or_default() += 1;
                    let rec = Record::SharedPut {
                        fs,
                        key,
                        block: Shared { addr, fp },
                    };
                    self.with_meta(|m, io| m.apply(io, &rec))?;
                    self.pending_puts.push(rec);
                    self.puts_pushed += 1;
                    self.put_at.insert((fs, key), self.puts_pushed);
                    need = self.puts_pushed;
                    key
                }
            };
            *self.shared_refs.entry((fs, key)).or_default() += 1;
            keys.push(key);
        }
        Ok((keys, need))
    }

    /// Blocks in this shard's shared pool.
    pub fn shared_blocks(&self) -> usize {
        self.meta.shared_len() as usize
    }

    /// Reads shared blocks by key: 4 KiB each, in order.
    ///
    /// Blocks stored back to back in one chunk (as a sequential write
    /// leaves them) are read with one device read per run, not one each.
    pub fn read_shared(&mut self, fs: FsId, keys: &[u128]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; keys.len() * BLOCK];
        let mut blocks: Vec<(usize, Shared)> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            blocks.push((i, self.shared_block(fs, *key)?));
        }
        blocks.sort_by_key(|(_, b)| (b.addr.stripe, b.addr.chunk, b.addr.offset));
        let runs = shared_runs(&blocks);
        let whole: Vec<BlockAddr> = runs.iter().map(|r| r.2).collect();
        self.prefetch(fs, &whole);
        let r = self.read_shared_runs(fs, &blocks, &runs, &mut out);
        self.ahead.clear();
        r.map(|()| out)
    }

    /// Reads the runs [`shared_runs`] found into `out`.
    fn read_shared_runs(
        &mut self,
        fs: FsId,
        blocks: &[(usize, Shared)],
        runs: &[(usize, usize, BlockAddr)],
        out: &mut [u8],
    ) -> Result<()> {
        for &(run, end, whole) in runs {
            let first = blocks[run].1.addr;
            let mut bytes = vec![0u8; whole.stored_len as usize];
            // One read for the run; damage it cannot be rebuilt from at once
            // is read block by block.
            if end - run == 1 || self.read_stored(fs, &whole, &mut bytes).is_err() {
                for &(i, b) in &blocks[run..end] {
                    self.read_ref_into(fs, b.as_ref(), &mut out[i * BLOCK..(i + 1) * BLOCK])?;
                }
            } else {
                for &(i, b) in &blocks[run..end] {
                    let at = (b.addr.offset - first.offset) as usize;
                    let stored = &bytes[at..at + b.addr.stored_len as usize];
                    let dst = &mut out[i * BLOCK..(i + 1) * BLOCK];
                    if b.addr.compressed {
                        Lz4Probe.decompress(stored, dst).map_err(|e| {
                            StoreError::Unrecoverable {
                                stripe: b.addr.stripe,
                                reason: e.to_string(),
                            }
                        })?;
                    } else {
                        dst.copy_from_slice(stored);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn read_shared_into(&mut self, fs: FsId, key: u128, out: &mut [u8]) -> Result<()> {
        let b = self.shared_block(fs, key)?;
        self.read_ref_into(fs, b.as_ref(), out)
    }

    /// A block of this shard's shared pool by key.
    pub(super) fn shared_block(&mut self, fs: FsId, key: u128) -> Result<Shared> {
        let shard = self.layout.shard;
        self.with_meta(|m, io| m.shared(io, fs, key))?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("shared block {key:#x} of file system {fs} on shard {shard}"),
            })
    }

    /// Drops references to shared blocks (their referring records are
    /// durable); a block nothing refers to leaves the pool.
    pub fn drop_shared(&mut self, drops: &[(FsId, u128)]) -> Result<()> {
        for &(fs, key) in drops {
            self.unref_shared(fs, key)?;
        }
        Ok(())
    }

    pub(super) fn unref_shared(&mut self, fs: FsId, key: u128) -> Result<()> {
        let left = match self.shared_refs.get_mut(&(fs, key)) {
            Some(n) => {
                *n -= 1;
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.shared_refs.remove(&(fs, key));
            self.drop_entry(fs, key)?;
        }
        Ok(())
    }

    /// Removes a shared block from the pool.
    pub(super) fn drop_entry(&mut self, fs: FsId, key: u128) -> Result<()> {
        if self.with_meta(|m, io| m.shared(io, fs, key))?.is_some() {
            let n = self.record(Record::SharedDrop { fs, key })?;
            self.dropping.insert((fs, key), n);
        }
        Ok(())
    }

    /// Every reference this shard's block maps hold to shared blocks (of
    /// any shard, this one included), by (owner, file system, key).
    pub fn remote_refs(&mut self) -> Result<HashMap<(u32, FsId, u128), u64>> {
        let mut out = HashMap::new();
        self.with_meta(|m, io| {
            let fs_of = m.fs_of_files(io)?;
            m.all_blocks(io, &mut |ino, _, b| {
                if let (Some(owner), Some(&fs)) = (b.owner(), fs_of.get(&ino)) {
                    *out.entry((owner, fs, b.fp)).or_default() += 1;
                }
                true
            })?;
            // Snapshots' dead lists hold references like the maps.
            m.all_dead_blocks(io, &mut |fs, _, b| {
                if let Some(owner) = b.owner() {
                    *out.entry((owner, fs, b.fp)).or_default() += 1;
                }
            })
        })?;
        Ok(out)
    }

    /// Sets the reference counts of this shard's shared blocks from every
    /// shard's block maps (when the engine opens): blocks nothing refers to
    /// (put just before a crash, or dropped by a record whose owner never
    /// heard of it) leave the pool. Returns the references to keys the pool
    /// does not hold (which would be a bug: [`Store::fsck`] reports them).
    pub fn set_shared_refs(&mut self, refs: HashMap<(FsId, u128), u64>) -> Result<u64> {
        let mut held = std::collections::HashSet::new();
        self.with_meta(|m, io| {
            m.shared_blocks(io, &mut |fs, key, _| {
                held.insert((fs, key));
                true
            })
        })?;
        let missing = refs.keys().filter(|k| !held.contains(k)).count() as u64;
        let dead: Vec<(FsId, u128)> = held.into_iter().filter(|k| !refs.contains_key(k)).collect();
        self.shared_refs = refs;
        for (fs, key) in dead {
            self.drop_entry(fs, key)?;
        }
        Ok(missing)
    }

    /// Records that blocks of file `ino` (a part here when not homed here)
    /// are the given shared blocks, and that the file has at least `size`
    /// bytes. `waits` names, per owner shard, the record it must have
    /// journaled before this record may be ([`Store::put_shared`]).
    pub fn map_shared(
        &mut self,
        ino: Ino,
        fs: FsId,
        size: u64,
        blocks: Vec<(u64, BlockRef)>,
        waits: &[(u32, u64)],
    ) -> Result<()> {
        self.ensure_part(ino, fs)?;
        let size = self.size_of(ino)?.max(size);
        let n = self.record(Record::Extents {
            ino,
            size,
            blocks,
            mtime: now_nanos(),
        })?;
        for &(owner, need) in waits {
            if owner != self.layout.shard {
                self.waits.push_back((n, owner, need));
            }
        }
        Ok(())
    }

    /// Dropped references to other shards' shared blocks whose records are
    /// now durable: the engine delivers them to their owners.
    pub fn take_drops(&mut self) -> Vec<SharedDrop> {
        std::mem::take(&mut self.ready_drops)
    }

    /// The reference counts of this shard's shared blocks (to carry them
    /// when the shard moves to another reactor).
    pub fn shared_refs(&self) -> HashMap<(FsId, u128), u64> {
        self.shared_refs.clone()
    }
}

/// The runs of `blocks` (sorted by address) contiguous in one chunk, at
/// most [`MAX_IO`] bytes each: (first index, end index, the whole run's
/// stored address).
fn shared_runs(blocks: &[(usize, Shared)]) -> Vec<(usize, usize, BlockAddr)> {
    let mut runs = Vec::new();
    let mut run = 0;
    while run < blocks.len() {
        let first = blocks[run].1.addr;
        let mut end = run + 1;
        let mut span = u64::from(first.stored_len);
        while end < blocks.len() {
            let a = blocks[end].1.addr;
            if a.stripe != first.stripe
                || a.chunk != first.chunk
                || u64::from(a.offset) != u64::from(first.offset) + span
                || span + u64::from(a.stored_len) > MAX_IO as u64
            {
                break;
            }
            span += u64::from(a.stored_len);
            end += 1;
        }
        let whole = if end - run == 1 {
            first
        } else {
            BlockAddr {
                stored_len: span as u32,
                compressed: false,
                ..first
            }
        };
        runs.push((run, end, whole));
        run = end;
    }
    runs
}
