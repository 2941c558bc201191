//! Recovery: the newest valid checkpoint (the metadata root and the page
//! space's table), then the journal records after it in sequence order up
//! to the first gap (a torn tail), applied to the tree; the stripes open
//! at the crash are sealed from their logged bytes (`wal.rs`); then the
//! state derived from the metadata (free slots, stripe references, dedup
//! indexes) is rebuilt and a fresh checkpoint written.

use super::*;

impl Store {
    pub(super) fn recover(&mut self) -> Result<()> {
        let t0 = std::time::Instant::now();
        // Newest valid checkpoint on any device.
        let mut best: Option<(u64, u64, Meta, PageSpace)> = None;
        let devices = self.devs.len();
        for which in 0..2 {
            let lba = self.layout.checkpoint_lba(which);
            let blocks = self.layout.checkpoint_blocks;
            let Some((seq, payload)) = self.newest_record(CHECKPOINT_MAGIC, lba, blocks)? else {
                continue;
            };
            if best.as_ref().is_none_or(|b| seq > b.0) {
                let mut r = crate::codec::Reader::new(&payload);
                let root = Meta::decode_root(&mut r, self.meta_cache).and_then(|m| {
                    let space = PageSpace::decode(&mut r, &self.layout, devices)?;
                    match r.remaining() {
                        0 => Ok((m, space)),
                        _ => Err(crate::codec::DecodeError {
                            what: "checkpoint length",
                        }),
                    }
                });
                if let Ok((m, space)) = root {
                    best = Some((seq, which, m, space));
                }
            }
        }
        let Some((ck_seq, ck_slot, meta, space)) = best else {
            return Err(StoreError::Format {
                device: "every device".into(),
                error: FormatError::Damaged {
                    what: "metadata checkpoint",
                },
            });
        };
        // Journal records after it: the tail, read as far as it goes.
        let tail = self.read_tail(ck_seq)?;
        let t_read = t0.elapsed();
        self.meta = meta;
        self.meta.home = crate::meta::namespace::Home {
            shard: self.layout.shard,
            shards: self.layout.shards.max(1),
        };
        self.space = space;
        // Slots the page space holds are not free (replay may allocate).
        self.slots = Slots::all_free(&self.layout, self.devs.len());
        for (d, slot) in self.space.slots().collect::<Vec<_>>() {
            self.slots.claim(d, slot);
        }
        let mut seq = ck_seq;
        let mut open = OpenStripes::new();
        for batch in tail {
            for r in batch {
                match r {
                    Record::OpenData {
                        fs,
                        stripe,
                        chunk,
                        offset,
                        bytes,
                    } => {
                        open.entry(stripe)
                            .or_insert_with(|| (fs, Vec::new()))
                            .1
                            .push((chunk, offset, bytes));
                        continue;
                    }
                    Record::Stripe(ref s) => {
                        // Sealed: durable by itself.
                        open.remove(&s.id);
                    }
                    _ => {}
                }
                self.with_meta(|m, io| m.apply(io, &r))?;
            }
            seq += 1;
        }
        self.seq = seq;
        self.ckpt_slot = ck_slot;
        let t_replay = t0.elapsed();
        self.rebuild_derived(open)?;
        let t_derived = t0.elapsed();
        // Start from a clean journal; the checkpoint includes any stripes
        // rebuild_derived found dead, so their slots are free at once.
        self.checkpoint()?;
        tracing::info!(
            shard = self.layout.shard,
            read_ms = t_read.as_millis() as u64,
            replay_ms = (t_replay - t_read).as_millis() as u64,
            derived_ms = (t_derived - t_replay).as_millis() as u64,
            checkpoint_ms = (t0.elapsed() - t_derived).as_millis() as u64,
            "shard recovered"
        );
        self.slots.durable(self.pushed);
        self.pending.clear();
        self.pushed = 0;
        self.journaled = 0;
        self.pending_puts.clear();
        self.puts_pushed = 0;
        self.puts_journaled = 0;
        Ok(())
    }

    /// The newest whole record at `lba` (at most `max` blocks) on any
    /// healthy device: every device's header is read first (a device that
    /// missed writes holds an older one), then the record from the device
    /// with the highest sequence number holding it whole, so a record
    /// costs its own size, not its area's.
    fn newest_record(&mut self, magic: u32, lba: u64, max: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let bs = self.layout.block_size as usize;
        let ids: Vec<usize> = self.healthy().collect();
        let mut heads: Vec<(u64, usize, u64)> = self
            .read_from(ids, lba, 1)?
            .into_iter()
            .filter_map(|(d, head)| {
                let (seq, len) = format::peek_record(magic, head.0.as_slice())?;
                let blocks = format::record_blocks(len, bs);
                (blocks <= max).then_some((seq, d, blocks))
            })
            .collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        for (_, d, blocks) in heads {
            let Some((_, buf)) = self.read_from(vec![d], lba, blocks)?.pop() else {
                continue;
            };
            if let Ok((seq, payload)) = format::decode_record(magic, buf.0.as_slice()) {
                return Ok(Some((seq, payload.to_vec())));
            }
        }
        Ok(None)
    }

    /// The journal records after checkpoint sequence `ck_seq`, in order.
    /// A checkpoint starts the journal over at its first block and records
    /// follow one another, so the tail is read from there, a window at a
    /// time, each record from the first device holding it whole (every
    /// device has a copy); it ends where no device holds the next one (the
    /// end, or a record torn by a crash). Opening costs the tail, not the
    /// journal's size.
    fn read_tail(&mut self, ck_seq: u64) -> Result<Vec<Vec<Record>>> {
        const WINDOW: u64 = 256;
        let bs = self.layout.block_size as usize;
        let end = self.layout.journal_blocks;
        let start = self.layout.journal_start;
        // Per device: the window read last (first block, blocks, bytes).
        let mut windows: HashMap<usize, (u64, u64, Scratch)> = HashMap::new();
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut next = ck_seq + 1;
        'tail: while at < end {
            for d in self.healthy().collect::<Vec<_>>() {
                let mut want = 1u64;
                loop {
                    let covered = windows
                        .get(&d)
                        .is_some_and(|(from, n, _)| *from <= at && at + want <= from + n);
                    if !covered {
                        let n = WINDOW.max(want).min(end - at);
                        match self.read_from(vec![d], start + at, n)?.pop() {
                            Some((_, buf)) => {
                                windows.insert(d, (at, n, buf));
                            }
                            None => break,
                        }
                    }
                    let (from, n, buf) = &windows[&d];
                    let bytes = &buf.0.as_slice()[(at - from) as usize * bs..*n as usize * bs];
                    match format::peek_record(JOURNAL_MAGIC, bytes) {
                        Some((seq, len)) if seq == next => {
                            let blocks = format::record_blocks(len, bs);
                            if at + blocks > end {
                                break;
                            }
                            if blocks > want {
                                want = blocks;
                                continue;
                            }
                            let batch = format::decode_record(JOURNAL_MAGIC, bytes)
                                .ok()
                                .and_then(|(_, payload)| meta::decode_batch(payload).ok());
                            if let Some(batch) = batch {
                                out.push(batch);
                                at += blocks;
                                next += 1;
                                continue 'tail;
                            }
                            break;
                        }
                        _ => break,
                    }
                }
            }
            if at < end {
                tracing::debug!(records = out.len(), block = at, "journal tail ends");
            }
            break;
        }
        Ok(out)
    }

    /// Rebuilds free slots, stripe reference counts, and per file system
    /// writers with their dedup indexes, from the metadata, once the
    /// stripes open at the crash are sealed from their logged bytes.
    pub(super) fn rebuild_derived(&mut self, open: OpenStripes) -> Result<()> {
        self.slots = Slots::all_free(&self.layout, self.devs.len());
        for (d, slot) in self.space.slots().collect::<Vec<_>>() {
            self.slots.claim(d, slot);
        }
        let ids = self.with_meta(|m, io| m.stripe_ids(io))?;
        for &id in &ids {
            let s = self.stripe(id)?;
            for &(d, slot) in &s.chunks {
                self.slots.claim(d, slot);
            }
        }
        self.writers.clear();
        self.restore_open(open)?;
        self.refs.clear();
        self.writers.clear();
        let fss: Vec<FsMeta> = self.meta.fss.values().cloned().collect();
        for fs in &fss {
            self.writer(fs.id)?;
        }
        // Each stripe's live references are kept in the tree (counted as
        // records apply), so opening reads one key per stripe, not the
        // block maps.
        self.refs = self.with_meta(|m, io| m.stripe_refs(io))?;
        // The dedup indexes of file systems that reduce data are rebuilt
        // from their blocks (their fingerprints): only then are the maps
        // read.
        if self.meta.fss.values().any(|f| f.reduction) {
            let mut held: Vec<(FsId, BlockRef)> = Vec::new();
            self.with_meta(|m, io| {
                let fs_of = m.fs_of_files(io)?;
                m.all_blocks(io, &mut |ino, _, b| {
                    if let (None, Some(&fs)) = (b.owner(), fs_of.get(&ino)) {
                        held.push((fs, b));
                    }
                    true
                })?;
                m.shared_blocks(io, &mut |fs, _, b| {
                    held.push((fs, b.as_ref()));
                    true
                })
            })?;
            for (fs, b) in held {
                if b.fp == 0 {
                    continue;
                }
                if let Some(w) = self.writers.get_mut(&fs) {
                    let idx = w.pipeline.index_mut();
                    match idx.get(fs, b.fp) {
                        Some(e) if e.location == b.addr => {
                            idx.add_ref(fs, b.fp);
                        }
                        Some(_) => {}
                        None => {
                            idx.insert(fs, b.fp, b.addr);
                        }
                    }
                }
            }
        }
        // Stripes nothing refers to (their last block died just before a
        // crash, or a sync never finished) are freed now.
        for id in ids {
            if !self.refs.contains_key(&id) {
                self.free_stripe(id)?;
            }
        }
        Ok(())
    }
}
