//! Garbage collection: the live blocks of stripes less than half live move
//! to the open stripe, and the emptied stripes are freed.

use super::*;

/// One reference to a stored block: (file, logical block, where).
pub(super) type BlockUse = (Holder, BlockRef);

/// What refers to a stored block: a file's logical block, or a key of the
/// shard's shared pool.
#[derive(Debug, Clone, Copy)]
pub(super) enum Holder {
    File(Ino, u64),
    Shared(u128),
}

impl Store {
    /// Garbage collection: moves the live blocks out of up to `max_stripes`
    /// sealed stripes that are less than half live into the open stripe,
    /// and frees them. The moves become durable, and the freed slots
    /// reusable, at the next [`Store::sync`]. Runs in small steps so
    /// foreground I/O is never held up for long.
    pub fn gc(&mut self, max_stripes: usize) -> Result<GcReport> {
        let mut rep = GcReport::default();
        let cs = self.layout.chunk_blocks * 4096;
        // Live (distinct) stored bytes and references per sealed stripe.
        let mut live: HashMap<u64, (u64, Vec<BlockUse>)> = HashMap::new();
        let mut seen: std::collections::HashSet<BlockAddr> = std::collections::HashSet::new();
        let mut width: HashMap<u64, u64> = HashMap::new();
        for id in self.with_meta(|m, io| m.stripe_ids(io))? {
            let s = self.stripe(id)?;
            // Snapshots may name the blocks of older stripes in place (a
            // file system that reduces data names its pool's keys instead).
            let pinned = self
                .meta
                .fss
                .get(&s.fs)
                .is_some_and(|f| !f.reduction && id < self.meta.gc_floor(s.fs));
            if !pinned {
                width.insert(id, u64::from(s.k));
            }
        }
        self.with_meta(|m, io| {
            let mut add = |holder: Holder, b: BlockRef| {
                if !width.contains_key(&b.addr.stripe) {
                    return;
                }
                let e = live.entry(b.addr.stripe).or_default();
                if seen.insert(b.addr) {
                    e.0 += u64::from(b.addr.stored_len);
                }
                e.1.push((holder, b));
            };
            m.all_blocks(io, &mut |ino, idx, b| {
                add(Holder::File(ino, idx), b);
                true
            })?;
            m.shared_blocks(io, &mut |_, key, sh| {
                add(Holder::Shared(key), sh.as_ref());
                true
            })
        })?;
        let mut cands: Vec<(u64, u64)> = live
            .iter()
            .filter_map(|(&id, (bytes, _))| {
                let k = *width.get(&id)?;
                (*bytes * 2 < k * cs).then_some((*bytes, id))
            })
            .collect();
        cands.sort();
        for (_, id) in cands.into_iter().take(max_stripes) {
            let Some((_, refs)) = live.remove(&id) else {
                continue;
            };
            let fs = self.stripe(id)?.fs;
            let mut moved: HashMap<BlockAddr, BlockAddr> = HashMap::new();
            let mut stored = Vec::new();
            for &(_, b) in &refs {
                if moved.contains_key(&b.addr) {
                    continue;
                }
                stored.resize(b.addr.stored_len as usize, 0);
                self.read_stored(fs, &b.addr, &mut stored)?;
                let (new, _) = self.place(fs, &mut |p, _, sink| {
                    (p.relocate(&stored, b.addr.compressed, sink), 0)
                })?;
                if b.fp != 0 {
                    if let Some(w) = self.writers.get_mut(&fs) {
                        let idx = w.pipeline.index_mut();
                        if idx.get(fs, b.fp).is_some_and(|e| e.location == b.addr) {
                            idx.relocate(fs, b.fp, new);
                        }
                    }
                }
                moved.insert(b.addr, new);
                rep.moved_bytes += u64::from(b.addr.stored_len);
            }
            let mut by_ino: BTreeMap<Ino, Vec<(u64, BlockRef)>> = BTreeMap::new();
            let mut shared = Vec::new();
            for (holder, b) in refs {
                let addr = moved[&b.addr];
                *self.refs.entry(addr.stripe).or_default() += 1;
                match holder {
                    Holder::File(ino, idx) => by_ino
                        .entry(ino)
                        .or_default()
                        .push((idx, BlockRef { addr, fp: b.fp })),
                    Holder::Shared(key) => shared.push((key, Shared { addr, fp: b.fp })),
                }
            }
            for (ino, blocks) in by_ino {
                let size = self
                    .with_meta(|m, io| m.file(io, ino))?
                    .map_or(0, |i| i.size);
                self.record(Record::Extents {
                    ino,
                    size,
                    blocks,
                    mtime: 0,
                })?;
            }
            for (key, block) in shared {
                self.record(Record::SharedPut { fs, key, block })?;
            }
            rep.stripes += 1;
        }
        Ok(rep)
    }
}
