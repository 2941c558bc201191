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
            let mut lost = false;
            for c in 0..s.chunks.len() {
                let d = usize::from(s.chunks[c].0);
                if self.devs[d].as_ref().is_none_or(|x| !x.keeps()) {
                    lost = true;
                    continue;
                }
                if self.read_verified(&s, c, 0, per)?.is_none() {
                    let before = self.repairs.healed_sectors;
                    match self.read_sectors(id, c, 0, per) {
                        Ok(_) => rep.repaired_sectors += self.repairs.healed_sectors - before,
                        Err(_) => rep.unrecoverable += 1,
                    }
                }
            }
            // Chunks of lost devices move to healthy devices outside the
            // stripe.
            if lost {
                let mv = self.move_lost_chunks(&s)?;
                rep.relocated_chunks += mv.relocated;
                rep.unprotected_chunks += mv.stuck;
                rep.unrecoverable += mv.unrecoverable;
            }
        }
        self.sync()?;
        Ok(rep)
    }
}
