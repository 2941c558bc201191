//! Recovery: the newest valid checkpoint (the metadata root and the page
//! space's table), then the journal records after it in sequence order up
//! to the first gap (a torn tail), applied to the tree; then the state
//! derived from the metadata (free slots, stripe references, dedup
//! indexes) is rebuilt and a fresh checkpoint written.

use super::*;

impl Store {
    pub(super) fn recover(&mut self) -> Result<()> {
        let bs = self.layout.block_size as usize;
        // Newest valid checkpoint on any device.
        let mut best: Option<(u64, u64, Meta, PageSpace)> = None;
        let devices = self.devs.len();
        for which in 0..2 {
            let lba = self.layout.checkpoint_lba(which);
            for (_, buf) in self.read_all(lba, self.layout.checkpoint_blocks)? {
                if let Ok((seq, payload)) =
                    format::decode_record(CHECKPOINT_MAGIC, buf.0.as_slice())
                {
                    if best.as_ref().is_none_or(|b| seq > b.0) {
                        let mut r = crate::codec::Reader::new(payload);
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
        // Journal records after it, from every device.
        let mut records: HashMap<u64, Vec<Record>> = HashMap::new();
        for (_, buf) in self.read_all(self.layout.journal_start, self.layout.journal_blocks)? {
            let bytes = buf.0.as_slice();
            let mut b = 0usize;
            let end = self.layout.journal_blocks as usize;
            while b < end {
                let at = &bytes[b * bs..end * bs];
                match format::decode_record(JOURNAL_MAGIC, at) {
                    Ok((seq, payload)) => {
                        if seq > ck_seq && !records.contains_key(&seq) {
                            if let Ok(batch) = meta::decode_batch(payload) {
                                records.insert(seq, batch);
                            }
                        }
                        b += format::record_blocks(payload.len(), bs) as usize;
                    }
                    Err(_) => b += 1,
                }
            }
        }
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
        while let Some(batch) = records.remove(&(seq + 1)) {
            for r in &batch {
                self.with_meta(|m, io| m.apply(io, r))?;
            }
            seq += 1;
        }
        if !records.is_empty() {
            tracing::info!(
                ignored = records.len(),
                "journal records after a gap ignored (torn tail)"
            );
        }
        self.seq = seq;
        self.ckpt_slot = ck_slot;
        self.rebuild_derived()?;
        // Start from a clean journal; the checkpoint includes any stripes
        // rebuild_derived found dead, so their slots are free at once.
        self.checkpoint()?;
        self.slots.durable(self.pushed);
        self.pending.clear();
        self.pushed = 0;
        self.journaled = 0;
        self.pending_puts.clear();
        self.puts_pushed = 0;
        self.puts_journaled = 0;
        Ok(())
    }

    /// Rebuilds free slots, stripe reference counts, and per file system
    /// writers with their dedup indexes, from the metadata.
    pub(super) fn rebuild_derived(&mut self) -> Result<()> {
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
