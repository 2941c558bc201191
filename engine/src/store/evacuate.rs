//! Evacuation: the chunks a lost device held (missing, failed, or retiring
//! because its node leaves) rebuilt onto the healthy devices outside each
//! stripe, and the metadata page chunks it held copied again from a
//! surviving copy, so every stripe and page chunk is back to its full
//! redundancy without that device.
//!
//! It runs in steps of a few stripes between foreground requests (the
//! caller paces the steps), the most damaged stripes first; each moved
//! stripe is a record, so the work is resumable by construction — a step
//! after a crash, a reopen or a second loss continues with what is still
//! on a lost device, never from scratch.

use super::*;

/// What is left of an evacuation, and what its steps did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evacuation {
    /// Chunks rebuilt onto another device by this step.
    pub relocated_chunks: u64,
    /// Metadata page chunks copied onto another device by this step.
    pub relocated_pages: u64,
    /// Stripes that still have a chunk on a lost device.
    pub remaining_stripes: u64,
    /// Of those, stripes left with no redundancy (as many chunks lost as
    /// they have parity).
    pub unprotected_stripes: u64,
    /// Metadata page chunks still with a copy on a lost device (or whose
    /// new copies wait for a checkpoint).
    pub remaining_pages: u64,
    /// Chunks with no healthy device outside their stripe, or no free slot
    /// there: more devices or space are needed.
    pub stuck_chunks: u64,
    /// Stripes with more chunks gone than they have parity: unreadable
    /// until a device holding them comes back.
    pub unreadable_stripes: u64,
    /// Metadata page chunks with every copy gone.
    pub unreadable_pages: u64,
}

impl Evacuation {
    /// Nothing is left on a lost device.
    pub fn done(&self) -> bool {
        self.remaining_stripes == 0 && self.remaining_pages == 0
    }
}

/// The evacuation queue: stripes with chunks on the lost devices, most
/// damaged first, computed once per set of lost devices.
#[derive(Debug, Default)]
pub(super) struct EvacQueue {
    /// The lost devices the queue was computed for.
    lost: Vec<u16>,
    /// (chunks gone, parity, stripe id), to take from the back.
    stripes: Vec<(usize, usize, u64)>,
    /// Page chunks were moved and the checkpoint naming their new copies
    /// is not written yet.
    pages_unwritten: bool,
}

/// A stripe of a batch to move: (its index in the batch, the chunks read
/// to rebuild from, each lost chunk with its target device and slot).
type Plan = (usize, Vec<usize>, Vec<(usize, usize, u64)>);

/// What moving one stripe's lost chunks did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Moved {
    pub relocated: u64,
    /// No healthy device outside the stripe with a free slot.
    pub stuck: u64,
    pub unrecoverable: u64,
}

impl Store {
    /// Device indexes that are missing, failed or retiring.
    pub(super) fn lost_devices(&self) -> Vec<u16> {
        self.devices_where(|d| d.is_none_or(|d| !d.keeps()))
    }

    /// Device indexes that are missing or failed.
    fn gone_devices(&self) -> Vec<u16> {
        self.devices_where(|d| d.is_none_or(|d| d.failed))
    }

    fn devices_where(&self, f: impl Fn(Option<&Dev>) -> bool) -> Vec<u16> {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| f(d.as_ref()))
            .map(|(i, _)| i as u16)
            .collect()
    }

    /// Flushes devices `which`; returns those that flushed (the others are
    /// marked failed).
    fn flush_some(&mut self, which: &BTreeSet<usize>) -> BTreeSet<usize> {
        let cmds: Vec<(usize, IoCmd)> = which.iter().map(|&d| (d, IoCmd::flush(0))).collect();
        let mut ok = BTreeSet::new();
        for ((d, _), r) in cmds.iter().zip(run_io(&mut self.devs, &cmds)) {
            if r.is_ok() {
                ok.insert(*d);
            } else {
                self.mark_failed(*d, "flush");
            }
        }
        ok
    }

    /// Rebuilds each chunk of `s` whose device is lost onto a healthy
    /// device outside the stripe (the one with the most free slots), and
    /// records the stripe's new places.
    pub(super) fn move_lost_chunks(&mut self, s: &StripeMeta) -> Result<Moved> {
        let per = self.layout.chunk_blocks as usize;
        let mut out = Moved::default();
        let mut new = s.clone();
        for c in 0..s.chunks.len() {
            let d = usize::from(s.chunks[c].0);
            if self.devs[d].as_ref().is_some_and(Dev::keeps) {
                continue;
            }
            let target = self
                .placeable()
                .filter(|t| !new.chunks.iter().any(|&(x, _)| usize::from(x) == *t))
                .filter(|t| self.slots.free_on(*t) > 0)
                .max_by_key(|t| self.slots.free_on(*t));
            let Some(t) = target else {
                out.stuck += 1;
                continue;
            };
            let data = match self.rebuild(s, c, 0, per) {
                Ok(b) => b,
                Err(_) => {
                    out.unrecoverable += 1;
                    continue;
                }
            };
            let slot = self.slots.take(t).expect("checked non-empty");
            let mut w = Scratch::new(data.len())?;
            w.0.as_mut_slice()[..data.len()].copy_from_slice(&data);
            let cmd = IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0);
            if run_io(&mut self.devs, &[(t, cmd)])[0].is_err() {
                self.mark_failed(t, "relocate chunk");
                self.slots.unreserve([(t as u16, slot)]);
                continue;
            }
            if self.flush_some(&BTreeSet::from([t])).is_empty() {
                self.slots.unreserve([(t as u16, slot)]);
                continue;
            }
            new.chunks[c] = (t as u16, slot);
            out.relocated += 1;
        }
        if out.relocated > 0 {
            debug_assert!(
                new.chunks
                    .iter()
                    .map(|c| c.0)
                    .collect::<BTreeSet<_>>()
                    .len()
                    == new.chunks.len(),
                "stripe {} would hold two chunks on one device",
                new.id
            );
            self.record(Record::Stripe(new))?;
        }
        Ok(out)
    }

    /// Moves the lost chunks of `stripes` as [`Store::move_lost_chunks`]
    /// does, but with every survivor read of the batch in one submission
    /// and every rebuilt chunk written in another (a rebuild over the
    /// network waits one round trip per batch, not three per chunk). A
    /// stripe whose reads fail or do not verify goes the slow way, chunk by
    /// chunk. Returns what was done for each stripe.
    fn move_lost_batch(
        &mut self,
        stripes: &[(usize, usize, Arc<StripeMeta>)],
    ) -> Result<Vec<Moved>> {
        let per = self.layout.chunk_blocks as usize;
        let len = per * SECTOR;
        let mut out = vec![Moved::default(); stripes.len()];
        let mut plans: Vec<Plan> = Vec::new();
        for (i, (_, _, s)) in stripes.iter().enumerate() {
            let ok = |d: u16| self.devs[usize::from(d)].as_ref().is_some_and(Dev::keeps);
            let lost: Vec<usize> = (0..s.chunks.len())
                .filter(|&c| !ok(s.chunks[c].0))
                .collect();
            let present: Vec<usize> = (0..s.chunks.len())
                .filter(|c| !lost.contains(c))
                .take(usize::from(s.k))
                .collect();
            if present.len() < usize::from(s.k) {
                out[i].unrecoverable += lost.len() as u64;
                continue;
            }
            let mut held: Vec<usize> = s.chunks.iter().map(|c| usize::from(c.0)).collect();
            let mut moves = Vec::new();
            for c in lost {
                let target = self
                    .placeable()
                    .filter(|t| !held.contains(t))
                    .filter(|t| self.slots.free_on(*t) > 0)
                    .max_by_key(|t| self.slots.free_on(*t));
                let Some(t) = target else {
                    out[i].stuck += 1;
                    continue;
                };
                let slot = self.slots.take(t).expect("checked non-empty");
                held.push(t);
                moves.push((c, t, slot));
            }
            if !moves.is_empty() {
                plans.push((i, present, moves));
            }
        }
        if plans.is_empty() {
            return Ok(out);
        }
        // Every survivor, side by side.
        let reads: usize = plans.iter().map(|p| p.1.len()).sum();
        let mut rbuf = Scratch::new(reads * len)?;
        let mut cmds = Vec::with_capacity(reads);
        for (i, present, _) in &plans {
            let s = &stripes[*i].2;
            for &c in present {
                let (d, slot) = s.chunks[c];
                let at = cmds.len() * len;
                let buf = rbuf.0.as_mut_slice()[at..at + len].as_mut_ptr();
                cmds.push((
                    usize::from(d),
                    IoCmd::read(self.layout.slot_lba(slot), per as u32, buf, 0),
                ));
            }
        }
        let got = run_io(&mut self.devs, &cmds);
        for ((d, _), r) in cmds.iter().zip(&got) {
            if r.is_err() {
                self.mark_failed(*d, "chunk read");
            }
        }
        // Decode what verified; the rest goes the slow way.
        let writes: usize = plans.iter().map(|p| p.2.len()).sum();
        let mut wbuf = Scratch::new(writes * len)?;
        let mut wcmds = Vec::with_capacity(writes);
        let mut wrote: Vec<(usize, usize, usize, u64)> = Vec::new();
        let mut slow = Vec::new();
        let mut at = 0;
        for (i, present, moves) in plans {
            let s = stripes[i].2.clone();
            let first = at;
            at += present.len();
            let verified = present.iter().enumerate().all(|(j, &c)| {
                let b = &rbuf.0.as_slice()[(first + j) * len..(first + j + 1) * len];
                got[first + j].is_ok() && self.sums_hold(&s, c, 0, b)
            });
            if !verified {
                self.slots
                    .unreserve(moves.iter().map(|&(_, t, slot)| (t as u16, slot)));
                slow.push(i);
                continue;
            }
            let inputs: Vec<&[u8]> = rbuf.0.as_slice()[first * len..(first + present.len()) * len]
                .chunks(len)
                .collect();
            for (c, t, slot) in moves {
                let w = wcmds.len() * len;
                let dst = &mut wbuf.0.as_mut_slice()[w..w + len];
                self.decode(&s, &present, c, &inputs, dst)?;
                if !self.sums_hold(&s, c, 0, dst) {
                    out[i].unrecoverable += 1;
                    self.slots.unreserve([(t as u16, slot)]);
                    continue;
                }
                let ptr = dst.as_mut_ptr();
                wcmds.push((
                    t,
                    IoCmd::write(self.layout.slot_lba(slot), per as u32, ptr, 0),
                ));
                wrote.push((i, c, t, slot));
            }
        }
        let mut done = run_io(&mut self.devs, &wcmds);
        // The chunks are durable before the records that name them.
        let targets: BTreeSet<usize> = wcmds.iter().map(|c| c.0).collect();
        let flushed = self.flush_some(&targets);
        for ((t, _), r) in wcmds.iter().zip(done.iter_mut()) {
            if !flushed.contains(t) {
                *r = Err(IoError::Device { errno: libc::EIO });
            }
        }
        let mut new: BTreeMap<usize, StripeMeta> = BTreeMap::new();
        for ((i, c, t, slot), r) in wrote.into_iter().zip(done) {
            if r.is_err() {
                self.mark_failed(t, "relocate chunk");
                self.slots.unreserve([(t as u16, slot)]);
                out[i].stuck += 1;
                continue;
            }
            new.entry(i)
                .or_insert_with(|| StripeMeta::clone(&stripes[i].2))
                .chunks[c] = (t as u16, slot);
            out[i].relocated += 1;
        }
        for (_, s) in new {
            debug_assert!(
                s.chunks.iter().map(|c| c.0).collect::<BTreeSet<_>>().len() == s.chunks.len(),
                "stripe {} would hold two chunks on one device",
                s.id
            );
            self.record(Record::Stripe(s))?;
        }
        for i in slow {
            out[i] = self.move_lost_chunks(&stripes[i].2)?;
        }
        Ok(out)
    }

    /// One evacuation step: the lost chunks of up to `max_stripes` stripes
    /// (the most damaged first; with `urgent_only`, only stripes left with
    /// no redundancy) and of up to `max_stripes` metadata page chunks are
    /// rebuilt elsewhere and made durable. Returns what it did and what is
    /// left; a step with nothing lost does nothing.
    pub fn evacuate(&mut self, max_stripes: usize, urgent_only: bool) -> Result<Evacuation> {
        let lost = self.lost_devices();
        let gone = self.gone_devices();
        let mut rep = Evacuation::default();
        if self.evac.lost != lost || self.evac.stripes.is_empty() {
            let mut stripes = Vec::new();
            if !lost.is_empty() {
                for id in self.with_meta(|m, io| m.stripe_ids(io))? {
                    let s = self.stripe(id)?;
                    // Chunks gone (a retiring device's are still there:
                    // they count for nothing but the move).
                    let moving = s.chunks.iter().any(|c| lost.contains(&c.0));
                    let gone = s.chunks.iter().filter(|c| gone.contains(&c.0)).count();
                    if moving {
                        stripes.push((gone, usize::from(s.m), id));
                    }
                }
            }
            // The back is taken first: the most chunks lost, then the
            // oldest stripe.
            stripes.sort_by_key(|&(n, m, id)| (n.min(m + 1), std::cmp::Reverse(id)));
            self.evac.lost = lost.clone();
            self.evac.stripes = stripes;
        }
        let mut stuck = Vec::new();
        let mut batch = Vec::new();
        let mut taken = 0;
        while taken < max_stripes {
            let Some(&(n, m, id)) = self.evac.stripes.last() else {
                break;
            };
            if urgent_only && n < m {
                break;
            }
            self.evac.stripes.pop();
            taken += 1;
            // Freed or moved since the queue was made.
            let Some(s) = self.with_meta(|mt, io| mt.stripe(io, id))? else {
                continue;
            };
            if !s.chunks.iter().any(|c| lost.contains(&c.0)) {
                continue;
            }
            batch.push((n, m, s));
        }
        for (mv, (n, m, s)) in self.move_lost_batch(&batch)?.into_iter().zip(&batch) {
            rep.relocated_chunks += mv.relocated;
            rep.stuck_chunks += mv.stuck + mv.unrecoverable;
            if mv.stuck + mv.unrecoverable > 0 {
                stuck.push((n.saturating_sub(mv.relocated as usize), *m, s.id));
            }
        }
        // Stuck stripes go to the front: retried when the queue comes round.
        for e in stuck {
            self.evac.stripes.insert(0, e);
        }
        let pages = self.relocate_lost_pages(&lost, max_stripes)?;
        rep.relocated_pages = pages.relocated;
        rep.stuck_chunks += pages.stuck;
        if rep.relocated_chunks > 0 || rep.relocated_pages > 0 || self.evac.pages_unwritten {
            self.sync()?;
            if rep.relocated_pages > 0 {
                self.evac.pages_unwritten = true;
            }
            // The page chunks' new copies are named by the checkpoint.
            if self.evac.pages_unwritten && self.waits.is_empty() {
                self.write_checkpoint()?;
                self.evac.pages_unwritten = false;
            }
        }
        rep.remaining_stripes = self.evac.stripes.len() as u64;
        rep.unprotected_stripes = self
            .evac
            .stripes
            .iter()
            .filter(|&&(n, m, _)| n >= m)
            .count() as u64;
        rep.unreadable_stripes =
            self.evac.stripes.iter().filter(|&&(n, m, _)| n > m).count() as u64;
        let mut gone_pages: BTreeSet<usize> = BTreeSet::new();
        for d in &gone {
            for (n, _) in self.space.chunks_on(*d) {
                if self.space.copies_of(n).iter().all(|c| gone.contains(&c.0)) {
                    gone_pages.insert(n);
                }
            }
        }
        rep.unreadable_pages = gone_pages.len() as u64;
        rep.remaining_pages = lost
            .iter()
            .map(|d| self.space.chunks_on(*d).len() as u64)
            .sum::<u64>()
            + u64::from(self.evac.pages_unwritten);
        Ok(rep)
    }

    /// Copies up to `max` metadata page chunks with a copy on a lost device
    /// from a surviving copy onto a healthy device holding none.
    fn relocate_lost_pages(&mut self, lost: &[u16], max: usize) -> Result<Moved> {
        let per = self.layout.chunk_blocks as usize;
        let mut out = Moved::default();
        let todo: Vec<(usize, u16)> = lost
            .iter()
            .flat_map(|d| self.space.chunks_on(*d).into_iter().map(|(n, _)| (n, *d)))
            .take(max)
            .collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let w = Scratch::new(per * 4096)?;
        for (n, gone) in todo {
            let copies = self.space.copies_of(n).to_vec();
            let target = self
                .placeable()
                .filter(|t| !copies.iter().any(|&(x, _)| usize::from(x) == *t))
                .filter(|t| self.slots.free_on(*t) > 0)
                .max_by_key(|t| self.slots.free_on(*t));
            let Some(t) = target else {
                out.stuck += 1;
                continue;
            };
            let mut read = false;
            for &(d, s) in copies.iter().filter(|c| !lost.contains(&c.0)) {
                let cmd = IoCmd::read(self.layout.slot_lba(s), per as u32, w.0.as_ptr(), 0);
                if run_io(&mut self.devs, &[(usize::from(d), cmd)])[0].is_ok() {
                    read = true;
                    break;
                }
            }
            if !read {
                out.stuck += 1;
                continue;
            }
            let slot = self.slots.take(t).expect("checked non-empty");
            let cmd = IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0);
            let flush = IoCmd::flush(0);
            let r = run_io(&mut self.devs, &[(t, cmd), (t, flush)]);
            if r.iter().any(|r| r.is_err()) {
                self.mark_failed(t, "relocate metadata pages");
                self.slots.unreserve([(t as u16, slot)]);
                continue;
            }
            self.space.move_copy(n, gone, (t as u16, slot));
            out.relocated += 1;
        }
        Ok(out)
    }
}
