//! The chunk-slot allocator: the one owner of which slots are free.
//!
//! A slot's lifecycle is **free → reserved → in use → freeing → free**:
//!
//! - *reserve*: [`Slots::take`] hands a free slot to an open stripe (or to
//!   a chunk that scrub relocates) before any data that will live there is
//!   accepted, so a full device is a clean error up front;
//! - *in use*: a stripe record names it; [`Slots::claim`] marks what the
//!   recovered metadata names;
//! - a reserved slot that no record ever named (a file system deleted with
//!   its open stripe, a stripe whose write failed) goes straight back
//!   ([`Slots::unreserve`]);
//! - *freeing*: a slot the record numbered `n` freed is reusable only once
//!   that record is durable ([`Slots::release_after`], then
//!   [`Slots::durable`]): reusing it earlier would let a crash replay a
//!   state whose stripe still lives there, over data written since.
//!
//! Nothing else in the store edits free slots.

use std::collections::BTreeSet;

use super::*;

/// Free chunk slots per device, and slots waiting for the record that
/// freed them to become durable.
#[derive(Debug, Default)]
pub(super) struct Slots {
    free: Vec<BTreeSet<u64>>,
    /// (record number, device, slot), in record order.
    freeing: Vec<(u64, u16, u64)>,
}

impl Slots {
    /// Every slot of `devices` devices that `layout`'s shard owns, free.
    pub(super) fn all_free(layout: &Layout, devices: usize) -> Slots {
        let owned: BTreeSet<u64> = (0..layout.slots).filter(|s| layout.owns(*s)).collect();
        Slots {
            free: vec![owned; devices],
            freeing: Vec::new(),
        }
    }

    /// Marks a slot the metadata names as in use.
    pub(super) fn claim(&mut self, device: u16, slot: u64) {
        if let Some(f) = self.free.get_mut(usize::from(device)) {
            f.remove(&slot);
        }
    }

    /// Free slots on `device`.
    pub(super) fn free_on(&self, device: usize) -> usize {
        self.free.get(device).map_or(0, BTreeSet::len)
    }

    /// Free slots on every device.
    pub(super) fn free_total(&self) -> u64 {
        self.free.iter().map(|f| f.len() as u64).sum()
    }

    /// Whether a slot is free.
    pub(super) fn is_free(&self, device: u16, slot: u64) -> bool {
        self.free
            .get(usize::from(device))
            .is_some_and(|f| f.contains(&slot))
    }

    /// Reserves the lowest free slot on `device`.
    pub(super) fn take(&mut self, device: usize) -> Option<u64> {
        let f = self.free.get_mut(device)?;
        let slot = *f.iter().next()?;
        f.remove(&slot);
        Some(slot)
    }

    /// Gives back reserved slots that no record ever named.
    pub(super) fn unreserve(&mut self, slots: impl IntoIterator<Item = (u16, u64)>) {
        for (d, slot) in slots {
            let fresh = self.free[usize::from(d)].insert(slot);
            debug_assert!(fresh, "slot {slot} of device {d} unreserved twice");
        }
    }

    /// Slots that record `n` frees: reusable once it is durable.
    pub(super) fn release_after(&mut self, n: u64, slots: impl IntoIterator<Item = (u16, u64)>) {
        debug_assert!(
            self.freeing.last().is_none_or(|&(last, _, _)| last <= n),
            "records free slots in order"
        );
        self.freeing
            .extend(slots.into_iter().map(|(d, slot)| (n, d, slot)));
    }

    /// Every record up to number `done` is durable: the slots they freed
    /// are free.
    pub(super) fn durable(&mut self, done: u64) {
        let ready = self.freeing.partition_point(|&(n, _, _)| n <= done);
        for (_, d, slot) in self.freeing.drain(..ready) {
            let fresh = self.free[usize::from(d)].insert(slot);
            debug_assert!(fresh, "slot {slot} of device {d} freed twice");
        }
    }
}

/// Reserves `w` chunk slots on distinct devices: the healthy ones (not
/// retiring) with the most free slots first, then failed or retiring ones
/// if it must.
pub(super) fn reserve_slots(
    devs: &[Option<Dev>],
    slots: &mut Slots,
    w: usize,
) -> Result<Vec<(u16, u64)>> {
    let mut cands: Vec<(usize, usize, bool)> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let healthy = d.as_ref().is_some_and(Dev::keeps);
            (i, slots.free_on(i), healthy)
        })
        .filter(|&(_, free, _)| free > 0)
        .collect();
    cands.sort_by_key(|&(i, free, healthy)| (!healthy, std::cmp::Reverse(free), i));
    let healthy = cands.iter().filter(|c| c.2).count();
    if cands.len() < w {
        return Err(StoreError::NoSpace {
            what: format!(
                "devices are full (a stripe needs free space on {w} devices); \
                 delete files to free space"
            ),
        });
    }
    if healthy == 0 {
        return Err(StoreError::Io {
            device: "all".into(),
            op: "reserve stripe",
            error: IoError::Device { errno: libc::EIO },
        });
    }
    let mut out = Vec::with_capacity(w);
    for &(d, _, _) in cands.iter().take(w) {
        let slot = slots.take(d).expect("device has a free slot");
        out.push((d as u16, slot));
    }
    debug_assert_eq!(out.len(), w);
    Ok(out)
}

impl Store {
    /// Chunk slots kept free for metadata pages: what the next checkpoint
    /// may need (every dirty node on new pages, with the pages they
    /// supersede still held until the root is durable), so data can never
    /// fill the devices so full that metadata cannot be written.
    pub(super) fn meta_headroom(&self) -> u64 {
        let per = self.space.pages_per_chunk().max(1);
        let dirty = self.meta.dirty_nodes() as u64;
        (4 + 2 * dirty.div_ceil(per)) * self.space.copies() as u64
    }

    /// Reserves chunk slots for a stripe of width `w`: on the healthy
    /// devices with the most free slots, then on failed ones if it must;
    /// never into the metadata's headroom.
    pub(super) fn reserve(&mut self, w: usize) -> Result<Vec<(u16, u64)>> {
        let spare = self.meta_headroom();
        self.reserve_above(w, spare)
    }

    /// Reserves chunk slots for an acknowledged stripe restored from the
    /// journal at open: its slots were held when it was acknowledged and
    /// are free again, but replay has left more nodes dirty than the write
    /// ever had, so only the fixed part of the headroom is kept (the
    /// recovery's checkpoint writes those nodes before anything else
    /// allocates).
    pub(super) fn reserve_restored(&mut self, w: usize) -> Result<Vec<(u16, u64)>> {
        let spare = 4 * self.space.copies() as u64;
        self.reserve_above(w, spare)
    }

    fn reserve_above(&mut self, w: usize, spare: u64) -> Result<Vec<(u16, u64)>> {
        if self.slots.free_total() < spare + w as u64 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "devices are full ({} free chunk slots on shard {}, {spare} kept for \
                     metadata); delete files to free space",
                    self.slots.free_total(),
                    self.layout.shard
                ),
            });
        }
        reserve_slots(&self.devs, &mut self.slots, w)
    }

    /// Frees a stripe: its record is queued, and its slots become free
    /// once that record is durable.
    pub(super) fn free_stripe(&mut self, id: u64) -> Result<()> {
        let chunks = self
            .with_meta(|m, io| m.stripe(io, id))?
            .map(|s| s.chunks.clone())
            .unwrap_or_default();
        let rec = Record::StripeFree { id };
        self.with_meta(|m, io| m.apply(io, &rec))?;
        let n = self.push(rec);
        self.slots.release_after(n, chunks);
        self.refs.remove(&id);
        Ok(())
    }
}
