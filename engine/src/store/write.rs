//! Writes: blocks through the file system's pipeline into its open
//! stripe, with the chunk slots of the open stripe (and of the next one,
//! before a block that may seal it goes in) reserved first, so a full
//! device is an error before any data is accepted; a sealed stripe is
//! written whole.

use super::*;

/// What [`Store::place`] runs on the pipeline: returns the block's address
/// and indexed fingerprint (0 if none).
pub(super) type PlaceOp<'a> = dyn FnMut(
        &mut WritePipeline,
        &mut dyn BlockReader,
        &mut dyn FnMut(SealedStripe<'_>),
    ) -> (BlockAddr, u128)
    + 'a;

/// Per file system write state.
pub(super) struct FsWriter {
    pub(super) pipeline: WritePipeline,
    /// Chunk slots reserved for the open stripe.
    pub(super) reserved: Option<Vec<(u16, u64)>>,
    /// Slots reserved for the stripe after it, taken before a block that
    /// could seal the open one goes in.
    pub(super) next: Option<Vec<(u16, u64)>>,
    /// How much of the open stripe the journal holds (`wal.rs`).
    pub(super) logged: Logged,
}

impl Store {
    pub(super) fn writer(&mut self, fs: FsId) -> Result<&mut FsWriter> {
        if !self.writers.contains_key(&fs) {
            let f = self.fs(fs)?.clone();
            let cfg = PipelineConfig {
                k: usize::from(f.k),
                m: usize::from(f.m),
                chunk_size: self.layout.chunk_blocks as usize * 4096,
                block_size: BLOCK,
                reduction: f.reduction,
            };
            // Stripe ids are unique per shard and file system: shard s,
            // file system f use (s << 56 | f << 40) .. + 2^40.
            let base = (u64::from(self.layout.shard) << 56) | (u64::from(fs) << 40);
            let next = self
                .with_meta(|m, io| m.last_stripe_in(io, base, base + (1 << 40)))?
                .map_or(base, |id| id + 1);
            let pipeline =
                WritePipeline::new(cfg, Stages::fast(), next).map_err(|e| StoreError::Invalid {
                    reason: e.to_string(),
                })?;
            self.writers.insert(
                fs,
                FsWriter {
                    pipeline,
                    reserved: None,
                    next: None,
                    logged: Logged::default(),
                },
            );
        }
        Ok(self.writers.get_mut(&fs).expect("inserted above"))
    }

    /// Runs blocks through the file system's pipeline; returns their refs.
    pub(super) fn store_blocks(
        &mut self,
        fs: FsId,
        blocks: &[(u64, &[u8])],
    ) -> Result<Vec<(u64, BlockRef)>> {
        let mut out = Vec::with_capacity(blocks.len());
        for &(idx, data) in blocks {
            let (addr, fp) = self.place(fs, &mut |p, reader, sink| {
                let addr = match p.write_block(fs, data, reader, sink) {
                    Placed::Dup(a) | Placed::New(a) => a,
                };
                (addr, p.last_fingerprint().unwrap_or(0))
            })?;
            *self.refs.entry(addr.stripe).or_default() += 1;
            out.push((idx, BlockRef { addr, fp }));
        }
        Ok(out)
    }

    /// The reused stripe write buffer, large enough for `width` chunks.
    pub(super) fn stripe_buffer(&mut self, width: usize) -> Result<Scratch> {
        let len = width * self.layout.chunk_blocks as usize * 4096;
        match self.wbuf.take() {
            Some(b) if b.0.len >= len => Ok(b),
            _ => Scratch::new(len),
        }
    }

    /// Puts one block into a file system's open stripe with `op`: reserves
    /// space first (for the open stripe, and for the next one if this block
    /// could seal it, so a full device is an error before anything is
    /// accepted), and writes out a stripe the block sealed.
    pub(super) fn place(&mut self, fs: FsId, op: &mut PlaceOp<'_>) -> Result<(BlockAddr, u128)> {
        let (k, m) = {
            let f = self.fs(fs)?;
            (usize::from(f.k), usize::from(f.m))
        };
        if self.writer(fs)?.reserved.is_none() {
            let slots = self.reserve(k + m)?;
            self.writer(fs)?.reserved = Some(slots);
        }
        let w = self.writer(fs)?;
        if w.next.is_none() && w.pipeline.may_seal_next() {
            let slots = self.reserve(k + m)?;
            self.writer(fs)?.next = Some(slots);
        }
        let mut w = self.writers.remove(&fs).expect("writer exists");
        let mut wbuf = self.stripe_buffer(k + m)?;
        let mut sealed: Option<(u64, Vec<u64>)> = None;
        let placed = {
            let mut reader = StoreReader { store: self, fs };
            op(&mut w.pipeline, &mut reader, &mut |s: SealedStripe<'_>| {
                copy_chunks(&s, &mut wbuf);
                sealed = Some((s.id, s.checksums.to_vec()));
            })
        };
        let mut res = Ok(placed);
        if let Some((id, sums)) = sealed {
            let slots = w.reserved.take();
            w.reserved = w.next.take();
            if let Err(e) = match slots {
                Some(slots) => self.write_stripe(fs, id, k, m, &wbuf, sums, slots),
                None => Err(StoreError::Invalid {
                    reason: format!("stripe {id} sealed without reserved space"),
                }),
            } {
                res = Err(e);
            }
        }
        self.wbuf = Some(wbuf);
        self.writers.insert(fs, w);
        res
    }

    /// Writes a sealed stripe's chunks into its reserved slots.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_stripe(
        &mut self,
        fs: FsId,
        id: u64,
        k: usize,
        m: usize,
        buf: &Scratch,
        sums: Vec<u64>,
        slots: Vec<(u16, u64)>,
    ) -> Result<()> {
        let cs = self.layout.chunk_blocks as usize * 4096;
        let cmds: Vec<(usize, IoCmd)> = slots
            .iter()
            .enumerate()
            .map(|(i, &(d, slot))| {
                (
                    usize::from(d),
                    IoCmd::write(
                        self.layout.slot_lba(slot),
                        self.layout.chunk_blocks as u32,
                        buf.0.as_ptr().wrapping_add(i * cs),
                        0,
                    ),
                )
            })
            .collect();
        let results = run_io(&mut self.devs, &cmds);
        let mut ok = 0;
        for ((d, _), r) in cmds.iter().zip(results) {
            match r {
                Ok(_) => ok += 1,
                Err(e) => {
                    tracing::warn!(stripe = id, error = %e, "chunk write failed");
                    self.mark_failed(*d, "chunk write");
                }
            }
        }
        if ok < k {
            self.slots.unreserve(slots);
            return Err(StoreError::Unrecoverable {
                stripe: id,
                reason: format!("only {ok} of {} chunks could be written", k + m),
            });
        }
        let rec = Record::Stripe(StripeMeta {
            id,
            fs,
            k: k as u8,
            m: m as u8,
            chunks: slots,
            sums,
        });
        self.with_meta(|m, io| m.apply(io, &rec))?;
        self.pending_stripes.push(rec);
        Ok(())
    }

    /// Writes `data` at `offset` of a file. Durable after [`Store::sync`].
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<()> {
        let st = self.inode(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| StoreError::Invalid {
                reason: "offset + length overflows".into(),
            })?;
        if end > st.size && !st.is_part() {
            self.check_capacity(st.fs, end - st.size)?;
            self.check_quota(st.quota, end - st.size)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.check_meta_room()?;
        let first = offset / BLOCK as u64;
        let last = (end - 1) / BLOCK as u64;
        let mut blocks: Vec<(u64, Vec<u8>)> = Vec::with_capacity((last - first + 1) as usize);
        for idx in first..=last {
            let bstart = idx * BLOCK as u64;
            let lo = offset.max(bstart);
            let hi = end.min(bstart + BLOCK as u64);
            let mut block = vec![0u8; BLOCK];
            if hi - lo < BLOCK as u64 {
                self.read_block_into(ino, idx, &mut block)?;
            }
            let src = (lo - offset) as usize..(hi - offset) as usize;
            block[(lo - bstart) as usize..(hi - bstart) as usize].copy_from_slice(&data[src]);
            blocks.push((idx, block));
        }
        let views: Vec<(u64, &[u8])> = blocks.iter().map(|(i, b)| (*i, &b[..])).collect();
        let refs = self.store_blocks(st.fs, &views)?;
        self.record(Record::Extents {
            ino,
            size: st.size.max(end),
            blocks: refs,
            mtime: now_nanos(),
        })?;
        Ok(())
    }
}
