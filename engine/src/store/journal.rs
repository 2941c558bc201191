//! The journal: every metadata change is applied, queued as a record, and
//! journaled on every healthy device at the next commit (with the open
//! stripes' new bytes, `wal.rs`) or sync (which seals them first); only
//! then is it acknowledged. Records that name another shard's shared blocks wait,
//! in order, until that shard has journaled them; stripe and new
//! shared-block records never wait (a quarter of the journal is kept for
//! them), so no two shards can wait on each other.

use super::*;

/// A journal entry's payload: a record count, then the records (the
/// layout [`meta::decode_batch`] reads).
pub(super) fn batch_payload(count: u32, records: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(count);
    w.buf.extend_from_slice(records);
    w.buf
}

/// What an answer waits for: a shard and the record number it must commit
/// to; `None` when nothing does.
pub type Receipt = Option<(u32, u64)>;

impl Store {
    /// Queues an applied record for the journal; returns its number.
    pub(super) fn push(&mut self, rec: Record) -> u64 {
        self.pending.push(rec);
        self.pushed += 1;
        self.pushed
    }

    /// Drops references released by a metadata change (record `n`).
    pub(super) fn release(&mut self, n: u64, released: meta::Released) -> Result<()> {
        for (fs, b) in released {
            if let Some(owner) = b.owner() {
                if owner == self.layout.shard {
                    // Journaled after the record that dropped it, so a
                    // crash between the two only leaks (the open recounts).
                    self.unref_shared(fs, b.fp)?;
                } else {
                    self.drops.push((n, (owner, fs, b.fp)));
                }
                continue;
            }
            if b.fp != 0 {
                if let Some(w) = self.writers.get_mut(&fs) {
                    let idx = w.pipeline.index_mut();
                    if idx.get(fs, b.fp).is_some_and(|e| e.location == b.addr) {
                        idx.drop_ref(fs, b.fp);
                    }
                }
            }
            if let Some(r) = self.refs.get_mut(&b.addr.stripe) {
                *r -= 1;
                if *r == 0 {
                    self.refs.remove(&b.addr.stripe);
                    let open = self
                        .writers
                        .get(&fs)
                        .is_some_and(|w| w.pipeline.open_stripe() == b.addr.stripe);
                    let id = b.addr.stripe;
                    if !open && self.with_meta(|m, io| m.has_stripe(io, id))? {
                        self.free_stripe(id)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a change, queues it for the journal and drops what it
    /// released; returns its number.
    pub(super) fn record(&mut self, rec: Record) -> Result<u64> {
        let released = self.with_meta(|m, io| m.apply(io, &rec))?;
        let n = self.push(rec);
        self.release(n, released)?;
        Ok(n)
    }

    /// Whether anything written is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        !self.pending.is_empty()
            || !self.pending_stripes.is_empty()
            || !self.pending_puts.is_empty()
            || self.writers.values().any(|w| w.pipeline.has_open_data())
    }

    /// Whether a record is not journaled yet (a change made since the last
    /// commit: its open bytes are logged with it).
    pub fn awaits_commit(&self) -> bool {
        !self.pending.is_empty()
            || !self.pending_stripes.is_empty()
            || !self.pending_puts.is_empty()
    }

    /// Seals open stripes, makes data and metadata durable. Everything
    /// written before this call survives a crash once it returns.
    pub fn sync(&mut self) -> Result<()> {
        self.seal_open()?;
        self.commit()
    }

    /// Seals every file system's open stripe and writes it out; its stripe
    /// record waits for the next commit.
    pub(super) fn seal_open(&mut self) -> Result<()> {
        let fss: Vec<FsId> = self.writers.keys().copied().collect();
        for fs in fss {
            let (k, m) = {
                let f = self.fs(fs)?;
                (usize::from(f.k), usize::from(f.m))
            };
            let mut w = self.writers.remove(&fs).expect("listed above");
            let mut wbuf = self.stripe_buffer(k + m)?;
            let mut sealed: Option<(u64, Vec<u64>)> = None;
            w.pipeline.seal(&mut |s: SealedStripe<'_>| {
                copy_chunks(&s, &mut wbuf);
                sealed = Some((s.id, s.checksums.to_vec()));
            });
            let res = match sealed {
                Some((id, sums)) => match w.reserved.take() {
                    Some(slots) => {
                        w.reserved = w.next.take();
                        self.write_stripe(fs, id, k, m, &wbuf, sums, slots)
                    }
                    None => Err(StoreError::Invalid {
                        reason: format!("stripe {id} sealed without reserved space"),
                    }),
                },
                None => Ok(()),
            };
            self.wbuf = Some(wbuf);
            self.writers.insert(fs, w);
            res?;
        }
        Ok(())
    }

    /// Makes everything written so far durable without sealing open
    /// stripes: their bytes not yet journaled go into the journal ahead of
    /// the records that map them (the write-ahead log), with every record
    /// that may go, in one journal entry — one journal write and flush for
    /// all the writes since the last commit (group commit). A stripe
    /// written since the last commit is flushed first.
    pub fn commit(&mut self) -> Result<()> {
        // A stripe whose blocks all died while it was open is freed now.
        let dead: Vec<u64> = self
            .pending_stripes
            .iter()
            .filter_map(|r| match r {
                Record::Stripe(s) if !self.refs.contains_key(&s.id) => Some(s.id),
                _ => None,
            })
            .collect();
        for id in dead {
            self.free_stripe(id)?;
        }
        if !self.pending_stripes.is_empty() {
            self.flush_devices()?;
        }
        // Stripe records, the open stripes' new bytes and new shared-block
        // records first, then the records up to the first one whose shared
        // blocks another shard has not journaled yet; the rest wait for a
        // later commit.
        let mut ready = self.ready_records();
        let (open, mut cursors) = self.open_data();
        let mut batch = std::mem::take(&mut self.pending_stripes);
        let stripes = batch.len();
        batch.extend(open);
        let logged = batch.len();
        batch.append(&mut self.pending_puts);
        let lanes = batch.len();
        batch.extend(self.pending.drain(..ready));
        let entries = self.journal_entries(&batch);
        let room = self.layout.journal_blocks.saturating_sub(self.head);
        let reserve = self.layout.journal_blocks / 4;
        if batch.is_empty() {
        } else if self.blocks_of(&entries) + reserve <= room {
            self.journal(entries)?;
        } else if self.pending.is_empty() {
            // The journal cannot take it all and nothing waits: a
            // checkpoint of the whole state replaces it. (Writing part of the
            // batch, checkpointing, then the rest would let replay apply
            // older records on top of the newer checkpoint.)
            self.write_checkpoint()?;
        } else {
            // Waiting records forbid a checkpoint (it would hold them): only
            // the stripe and shared-block records go, into the reserve, so
            // the shards waiting for this one are never held up by it. The
            // reserve is theirs alone: the open stripes are sealed instead
            // of logged, so the new shared blocks in them need no log.
            let mut fifo = batch.split_off(lanes);
            fifo.append(&mut self.pending);
            self.pending = fifo;
            ready = 0;
            let puts = batch.split_off(logged);
            batch.truncate(stripes);
            self.seal_open()?;
            self.flush_devices()?;
            batch.append(&mut self.pending_stripes);
            let stripes = batch.len();
            batch.extend(puts);
            let entries = self.journal_entries(&batch);
            if self.blocks_of(&entries) > room {
                // Even the reserve is full: everything waits for a sync
                // after the waits are met, when a checkpoint can replace the
                // journal.
                self.pending_puts = batch.split_off(stripes);
                self.pending_stripes = batch;
                return Ok(());
            }
            self.journal(entries)?;
            cursors.clear();
        }
        self.logged(cursors);
        self.journaled += ready as u64;
        self.puts_journaled = self.puts_pushed;
        let done = self.journaled;
        let puts_done = self.puts_journaled;
        self.put_at.retain(|_, n| *n > puts_done);
        self.dropping.retain(|_, n| *n > done);
        if let Some(p) = &self.peers {
            p.set(self.layout.shard, puts_done);
        }
        self.slots.durable(done);
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.drops)
            .into_iter()
            .partition(|(n, _)| *n <= done);
        self.drops = later;
        self.ready_drops.extend(now.into_iter().map(|(_, d)| d));
        // A checkpoint past half the journal; while a stripe is open it
        // waits (to five eighths) for the stripe to fill, since a checkpoint
        // seals open stripes and a stripe sealed part full wastes the rest
        // until garbage collection compacts it.
        let open = self.writers.values().any(|w| w.pipeline.has_open_data());
        let j = self.layout.journal_blocks;
        let full = if open {
            self.head * 8 > j * 5
        } else {
            self.head * 2 > j
        };
        if (full || self.meta.dirty_nodes() > checkpoint::DIRTY_LIMIT) && self.pending.is_empty() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// How many of the pending records may be journaled now: those before
    /// the first that refers to a block another shard has not journaled.
    pub(super) fn ready_records(&mut self) -> usize {
        let base = self.journaled;
        while let Some(&(n, owner, need)) = self.waits.front() {
            let met = self.peers.as_ref().is_some_and(|p| p.get(owner) >= need);
            if !met {
                return (n - base - 1) as usize;
            }
            self.waits.pop_front();
        }
        self.pending.len()
    }

    /// Records queued for the journal this session (the newest one's
    /// number).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// What a caller waits for before acknowledging a change it just made
    /// on this shard to inode `ino`'s file system: this shard and the
    /// record number to commit to ([`Store::commit_to`]), or `None` when
    /// that file system acknowledges before durable or nothing waits for
    /// the journal.
    pub fn receipt(&mut self, ino: Ino) -> Result<Receipt> {
        if !self.awaits_commit() {
            return Ok(None);
        }
        let fs = match self.with_meta(|m, io| m.file(io, ino))? {
            Some(i) => Some(i.fs),
            None => self.with_meta(|m, io| m.attr(io, ino))?.map(|a| a.fs),
        };
        let write_back = fs
            .and_then(|fs| self.meta.fss.get(&fs))
            .is_some_and(|f| f.write_back);
        Ok((!write_back).then_some((self.layout.shard, self.pushed)))
    }

    /// Commits, unless every record up to number `target` is journaled
    /// already (a commit since took it, with the open bytes it maps: the
    /// group commit's followers); says whether they are (false while some
    /// wait for other shards' journals).
    pub fn commit_to(&mut self, target: u64) -> Result<bool> {
        if self.journaled < target || !self.pending_puts.is_empty() {
            self.commit()?;
        }
        Ok(self.journaled >= target)
    }

    /// Syncs, and says whether every record up to number `target` is now
    /// journaled (false while some wait for other shards' journals).
    pub fn sync_to(&mut self, target: u64) -> Result<bool> {
        self.sync()?;
        Ok(self.journaled >= target)
    }

    /// Appends records to the journal on every healthy device, durably.
    /// Journal blocks the entries take.
    pub(super) fn blocks_of(&self, entries: &[Vec<u8>]) -> u64 {
        entries
            .iter()
            .map(|p| format::record_blocks(p.len(), self.layout.block_size as usize))
            .sum()
    }

    /// Groups records into journal entries of at most a quarter of the
    /// journal each (stripe records come first, so every prefix of
    /// entries is consistent).
    pub(super) fn journal_entries(&self, batch: &[Record]) -> Vec<Vec<u8>> {
        let bs = self.layout.block_size as usize;
        let limit = (self.layout.journal_blocks as usize / 4).max(1) * bs;
        // Group the records into entries of at most `limit` bytes (stripe
        // records come first, so every prefix of entries is consistent).
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let (mut body, mut count) = (Writer::default(), 0u32);
        for r in batch {
            let mut one = Writer::default();
            meta::encode_record(&mut one, r);
            if count > 0 && 4 + body.buf.len() + one.buf.len() + 64 > limit {
                entries.push(batch_payload(count, &body.buf));
                body.buf.clear();
                count = 0;
            }
            body.buf.extend_from_slice(&one.buf);
            count += 1;
        }
        if count > 0 {
            entries.push(batch_payload(count, &body.buf));
        }
        entries
    }

    /// Appends records to the journal on every healthy device, durably
    /// (the caller checked that they fit).
    pub(super) fn journal(&mut self, entries: Vec<Vec<u8>>) -> Result<()> {
        let bs = self.layout.block_size as usize;
        for payload in entries {
            let blocks = format::record_blocks(payload.len(), bs);
            self.seq += 1;
            let rec = format::encode_record(JOURNAL_MAGIC, self.seq, &payload, bs);
            let mut buf = Scratch::new(rec.len())?;
            buf.0.as_mut_slice()[..rec.len()].copy_from_slice(&rec);
            let lba = self.layout.journal_start + self.head;
            self.write_everywhere(lba, &buf, rec.len() / bs, "journal write")?;
            self.head += blocks;
        }
        Ok(())
    }
}
