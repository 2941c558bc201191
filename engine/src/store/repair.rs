//! Repair on the read path: sectors that are lost or fail their checksum
//! are rebuilt from k verified chunks of their stripe (decoders cached per
//! loss pattern) and, when their device is healthy, rewritten in place.

use super::*;

/// (k, m, chunks read, chunk rebuilt): one loss pattern's decoder.
pub(super) type DecoderKey = (u8, u8, Vec<usize>, usize);

impl Store {
    /// Reads sectors `s0..s1` of chunk `c` of a stripe, verified; rebuilds
    /// them from the other chunks if they are lost or bad (and heals them).
    pub(super) fn read_sectors(
        &mut self,
        id: u64,
        c: usize,
        s0: usize,
        s1: usize,
    ) -> Result<Vec<u8>> {
        let s = self.stripe(id)?;
        match self.read_verified(&s, c, s0, s1)? {
            Some(buf) => Ok(buf),
            None => {
                self.repairs.degraded_reads += 1;
                let buf = self.rebuild(&s, c, s0, s1)?;
                let (d, slot) = s.chunks[c];
                if self.devs[usize::from(d)]
                    .as_ref()
                    .is_some_and(|x| !x.failed)
                {
                    let mut w = Scratch::new(buf.len())?;
                    w.0.as_mut_slice()[..buf.len()].copy_from_slice(&buf);
                    let lba = self.layout.slot_lba(slot) + s0 as u64;
                    let r = run_io(
                        &mut self.devs,
                        &[(
                            usize::from(d),
                            IoCmd::write(lba, (s1 - s0) as u32, w.0.as_ptr(), 0),
                        )],
                    );
                    match r[0] {
                        Ok(_) => self.repairs.healed_sectors += (s1 - s0) as u64,
                        Err(_) => self.mark_failed(usize::from(d), "heal write"),
                    }
                }
                Ok(buf)
            }
        }
    }

    /// Reads and verifies sectors of one chunk; `None` if unreadable or bad.
    pub(super) fn read_verified(
        &mut self,
        s: &StripeMeta,
        c: usize,
        s0: usize,
        s1: usize,
    ) -> Result<Option<Vec<u8>>> {
        let n = s1 - s0;
        let mut buf = match self.rbuf.take() {
            Some(b) if b.0.len >= n * SECTOR => b,
            _ => Scratch::new(n * SECTOR)?,
        };
        let good = self.read_chunk_into(s, c, s0, s1, &mut buf.0.as_mut_slice()[..n * SECTOR]);
        let out = good.then(|| buf.0.as_slice()[..n * SECTOR].to_vec());
        self.rbuf = Some(buf);
        Ok(out)
    }

    /// Reads sectors `s0..s1` of chunk `c` into `out` (4 KiB-aligned) and
    /// verifies them; false if the device is gone or a checksum fails.
    pub(super) fn read_chunk_into(
        &mut self,
        s: &StripeMeta,
        c: usize,
        s0: usize,
        s1: usize,
        out: &mut [u8],
    ) -> bool {
        let (d, slot) = s.chunks[c];
        let d = usize::from(d);
        let Some(dev) = self.devs[d].as_mut().filter(|x| !x.failed) else {
            return false;
        };
        let lba = self.layout.slot_lba(slot) + s0 as u64;
        if run_one(dev, IoCmd::read(lba, (s1 - s0) as u32, out.as_mut_ptr(), 0)).is_err() {
            self.mark_failed(d, "chunk read");
            return false;
        }
        let per = self.layout.chunk_blocks as usize;
        match out
            .chunks(SECTOR)
            .enumerate()
            .find(|(i, sector)| Xxh3Sum.checksum(SEED_CHUNK, sector) != s.sums[c * per + s0 + i])
        {
            Some((i, _)) => {
                tracing::warn!(
                    stripe = s.id,
                    chunk = c,
                    sector = s0 + i,
                    "checksum mismatch"
                );
                false
            }
            None => true,
        }
    }

    /// Rebuilds sectors `s0..s1` of chunk `c` from k verified chunks.
    pub(super) fn rebuild(
        &mut self,
        s: &StripeMeta,
        c: usize,
        s0: usize,
        s1: usize,
    ) -> Result<Vec<u8>> {
        let (k, m) = (usize::from(s.k), usize::from(s.m));
        let len = (s1 - s0) * SECTOR;
        // Survivors land side by side in one reused aligned buffer.
        let mut dbuf = match self.dbuf.take() {
            Some(b) if b.0.len >= k * len => b,
            _ => Scratch::new(k * len)?,
        };
        let mut present = Vec::with_capacity(k);
        for i in (0..k + m).filter(|&i| i != c) {
            if present.len() == k {
                break;
            }
            let at = present.len() * len;
            if self.read_chunk_into(s, i, s0, s1, &mut dbuf.0.as_mut_slice()[at..at + len]) {
                present.push(i);
            }
        }
        if present.len() < k {
            self.dbuf = Some(dbuf);
            return Err(StoreError::Unrecoverable {
                stripe: s.id,
                reason: format!(
                    "only {} of the {k} chunks needed are readable",
                    present.len()
                ),
            });
        }
        let inputs: Vec<&[u8]> = dbuf.0.as_slice()[..k * len].chunks(len).collect();
        let mut out = vec![0u8; len];
        let decoded = self.decode(s, &present, c, &inputs, &mut out);
        self.dbuf = Some(dbuf);
        decoded?;
        if !self.sums_hold(s, c, s0, &out) {
            return Err(StoreError::Unrecoverable {
                stripe: s.id,
                reason: "rebuilt data fails its checksum".into(),
            });
        }
        Ok(out)
    }

    /// Decodes chunk `c` of stripe `s` (sectors of the same range as
    /// `inputs`) from the chunks `present`, whose bytes `inputs` are.
    pub(super) fn decode(
        &mut self,
        s: &StripeMeta,
        present: &[usize],
        c: usize,
        inputs: &[&[u8]],
        out: &mut [u8],
    ) -> Result<()> {
        debug_assert_eq!(present.len(), usize::from(s.k));
        // Decoders are cached per loss pattern: a device that stays gone
        // costs one matrix inversion, not one per read.
        let key = (s.k, s.m, present.to_vec(), c);
        if !self.decoders.contains_key(&key) {
            let codec = match self.codecs.entry((s.k, s.m)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    Codec::new(usize::from(s.k), usize::from(s.m), best_kernel())
                        .map_err(ec_err)?,
                ),
            };
            let decoder = codec.decoder(present, &[c]).map_err(ec_err)?;
            self.decoders.insert(key.clone(), decoder);
        }
        self.decoders[&key].apply(inputs, &mut [out]);
        Ok(())
    }

    /// Whether sectors of chunk `c` (from sector `s0`) hold the stripe's
    /// checksums.
    pub(super) fn sums_hold(&self, s: &StripeMeta, c: usize, s0: usize, bytes: &[u8]) -> bool {
        let per = self.layout.chunk_blocks as usize;
        bytes
            .chunks(SECTOR)
            .enumerate()
            .all(|(i, sector)| Xxh3Sum.checksum(SEED_CHUNK, sector) == s.sums[c * per + s0 + i])
    }
}
