//! Scrub: every chunk of every stripe checked, bad sectors rewritten, and
//! chunks of failed devices rebuilt onto healthy devices outside their
//! stripe.

use super::*;

impl Store {
    /// Checks every chunk of every stripe, rewrites bad sectors, and rebuilds
    /// chunks of failed devices onto healthy devices not in the stripe.
    pub fn scrub(&mut self) -> Result<ScrubReport> {
        let mut rep = ScrubReport::default();
        let per = self.layout.chunk_blocks as usize;
        let ids = self.with_meta(|m, io| m.stripe_ids(io))?;
        for id in ids {
            rep.stripes += 1;
            let s = self.stripe(id)?;
            let mut moved = false;
            let mut new = StripeMeta::clone(&s);
            for c in 0..s.chunks.len() {
                let d = usize::from(s.chunks[c].0);
                let healthy = self.devs[d].as_ref().is_some_and(|x| !x.failed);
                if healthy {
                    if self.read_verified(&s, c, 0, per)?.is_none() {
                        let before = self.repairs.healed_sectors;
                        match self.read_sectors(id, c, 0, per) {
                            Ok(_) => rep.repaired_sectors += self.repairs.healed_sectors - before,
                            Err(_) => rep.unrecoverable += 1,
                        }
                    }
                    continue;
                }
                // Move the chunk to a healthy device outside the stripe.
                let target = self
                    .healthy()
                    .filter(|t| !new.chunks.iter().any(|&(x, _)| usize::from(x) == *t))
                    .filter(|t| self.slots.free_on(*t) > 0)
                    .max_by_key(|t| self.slots.free_on(*t));
                let Some(t) = target else {
                    rep.unprotected_chunks += 1;
                    continue;
                };
                let data = match self.rebuild(&s, c, 0, per) {
                    Ok(b) => b,
                    Err(_) => {
                        rep.unrecoverable += 1;
                        continue;
                    }
                };
                let slot = self.slots.take(t).expect("checked non-empty");
                let mut w = Scratch::new(data.len())?;
                w.0.as_mut_slice()[..data.len()].copy_from_slice(&data);
                let r = run_io(
                    &mut self.devs,
                    &[(
                        t,
                        IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0),
                    )],
                );
                if r[0].is_err() {
                    self.mark_failed(t, "scrub write");
                    self.slots.unreserve([(t as u16, slot)]);
                    continue;
                }
                new.chunks[c] = (t as u16, slot);
                rep.relocated_chunks += 1;
                moved = true;
            }
            if moved {
                self.record(Record::Stripe(new))?;
            }
        }
        self.sync()?;
        Ok(rep)
    }
}
