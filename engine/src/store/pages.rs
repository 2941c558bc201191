//! The metadata page space: the B+tree's 4 KiB pages live in chunk slots
//! taken from the allocator as the metadata grows, each such *page chunk*
//! mirrored on `copies` distinct devices, and written through the shard's
//! queue pairs like everything else.
//!
//! A page's address is `chunk number * pages per chunk + page`. A page
//! superseded by a commit is freed only once the root that no longer names
//! it is durable ([`PageSpace::durable`]); a page chunk whose pages are all
//! free goes back to the allocator then. The table of page chunks and
//! their used pages is part of the checkpoint ([`PageSpace::encode`]).
//!
//! A read takes the first copy that is intact (its magic, address and
//! checksum hold) and rewrites the copies that were not.

use std::collections::BTreeSet;

use crate::meta::btree::{self, PageAddr, PageIo, PagePtr, TreeError, PAGE};

use super::alloc::reserve_slots;
use super::*;

/// Devices that hold a copy of each page chunk (at most).
const COPIES: usize = 3;

/// Where the metadata pages are: page chunks and their used pages.
#[derive(Debug, Default)]
pub(super) struct PageSpace {
    /// Pages per page chunk.
    per: u64,
    /// Copies of each new page chunk.
    copies: usize,
    /// Page chunks by number: the (device, slot) of each copy.
    chunks: Vec<Option<Vec<(u16, u64)>>>,
    /// Used-page bitmaps, one per page chunk.
    used: Vec<Vec<u64>>,
    /// Free pages of the page chunks, lowest first.
    free: BTreeSet<PageAddr>,
    /// Pages superseded by a commit whose root is not yet durable.
    limbo: Vec<PageAddr>,
    /// Copies rewritten because they were damaged or unreadable.
    pub(super) healed: u64,
}

impl PageSpace {
    /// An empty page space for `layout` on `devices` devices.
    pub(super) fn new(layout: &Layout, devices: usize) -> PageSpace {
        PageSpace {
            per: layout.chunk_blocks * u64::from(layout.block_size) / PAGE as u64,
            copies: devices.clamp(1, COPIES),
            ..PageSpace::default()
        }
    }

    /// Pages per page chunk.
    pub(super) fn pages_per_chunk(&self) -> u64 {
        self.per
    }

    /// Copies of each page chunk.
    pub(super) fn copies(&self) -> usize {
        self.copies
    }

    fn words(&self) -> usize {
        self.per.div_ceil(64) as usize
    }

    pub(super) fn is_used(&self, addr: PageAddr) -> bool {
        let (c, p) = ((addr / self.per) as usize, addr % self.per);
        self.used
            .get(c)
            .is_some_and(|w| w[(p / 64) as usize] >> (p % 64) & 1 == 1)
    }

    fn set_used(&mut self, addr: PageAddr, on: bool) {
        let (c, p) = ((addr / self.per) as usize, addr % self.per);
        let w = &mut self.used[c][(p / 64) as usize];
        debug_assert_ne!(
            *w >> (p % 64) & 1 == 1,
            on,
            "page {addr} used state flipped twice"
        );
        if on {
            *w |= 1 << (p % 64);
        } else {
            *w &= !(1 << (p % 64));
        }
    }

    /// Page chunks held.
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.iter().flatten().count()
    }

    /// Every chunk slot the page space holds, for the allocator.
    pub(super) fn slots(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.chunks.iter().flatten().flatten().copied()
    }

    /// The page chunks with a copy on device `d`: (chunk number, slot).
    pub(super) fn chunks_on(&self, d: u16) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (n, c) in self.chunks.iter().enumerate() {
            if let Some(&(_, slot)) = c.iter().flatten().find(|(dev, _)| *dev == d) {
                out.push((n, slot));
            }
        }
        out
    }

    /// Page chunk `n`'s copy on device `from` now lives at `to` (a healthy
    /// device holding no copy of it, written already).
    pub(super) fn move_copy(&mut self, n: usize, from: u16, to: (u16, u64)) {
        let Some(Some(c)) = self.chunks.get_mut(n) else {
            debug_assert!(false, "page chunk {n} is not held");
            return;
        };
        debug_assert!(
            !c.iter().any(|x| x.0 == to.0),
            "page chunk {n} already on {}",
            to.0
        );
        if let Some(x) = c.iter_mut().find(|x| x.0 == from) {
            *x = to;
        }
    }

    /// The copies of page chunk `n`.
    pub(super) fn copies_of(&self, n: usize) -> &[(u16, u64)] {
        self.chunks.get(n).and_then(|c| c.as_deref()).unwrap_or(&[])
    }

    /// Pages a commit superseded: free in the next root, reusable once it
    /// is durable.
    pub(super) fn retire(&mut self, pages: &[PagePtr]) {
        for p in pages {
            self.set_used(p.addr, false);
            self.limbo.push(p.addr);
        }
    }

    /// The root that retired the pages in limbo is durable: they are free,
    /// and page chunks left with no used page go back to the allocator
    /// (returned, to give back to it).
    pub(super) fn durable(&mut self) -> Vec<(u16, u64)> {
        let mut touched = BTreeSet::new();
        for addr in std::mem::take(&mut self.limbo) {
            debug_assert!(!self.is_used(addr));
            self.free.insert(addr);
            touched.insert((addr / self.per) as usize);
        }
        let mut back = Vec::new();
        for c in touched {
            if self.used[c].iter().all(|w| *w == 0) {
                let first = c as u64 * self.per;
                for a in first..first + self.per {
                    self.free.remove(&a);
                }
                back.extend(self.chunks[c].take().unwrap_or_default());
            }
        }
        back
    }

    /// The table, for the checkpoint (pages in limbo count as free: the
    /// root it goes with no longer names them; nor does it name page chunks
    /// left empty).
    pub(super) fn encode(&self, w: &mut Writer) {
        w.u64(self.per).u32(self.chunks.len() as u32);
        for (c, used) in self.chunks.iter().zip(&self.used) {
            // A page chunk with no used page goes back to the allocator once
            // this root is durable (and may then hold a stripe): the root
            // must not name it.
            let empty = used.iter().all(|w| *w == 0);
            match c.as_ref().filter(|_| !empty) {
                None => {
                    w.u8(0);
                }
                Some(copies) => {
                    w.u8(copies.len() as u8);
                    for &(d, slot) in copies {
                        w.u16(d).u64(slot);
                    }
                    for x in used {
                        w.u64(*x);
                    }
                }
            }
        }
    }

    /// Reads the table a checkpoint holds.
    pub(super) fn decode(
        r: &mut crate::codec::Reader<'_>,
        layout: &Layout,
        devices: usize,
    ) -> Result<PageSpace, crate::codec::DecodeError> {
        let mut s = PageSpace::new(layout, devices);
        let bad = |what| crate::codec::DecodeError { what };
        if r.u64("pages per chunk")? != s.per {
            return Err(bad("pages per chunk"));
        }
        let n = r.count(1, "page chunks")?;
        for c in 0..n {
            let copies = usize::from(r.u8("copies")?);
            if copies == 0 {
                s.chunks.push(None);
                s.used.push(vec![0; s.words()]);
                continue;
            }
            let mut cs = Vec::with_capacity(copies);
            for _ in 0..copies {
                let d = r.u16("device")?;
                let slot = r.u64("slot")?;
                if usize::from(d) >= devices || slot >= layout.slots || !layout.owns(slot) {
                    return Err(bad("page chunk slot"));
                }
                cs.push((d, slot));
            }
            let mut used = Vec::with_capacity(s.words());
            for _ in 0..s.words() {
                used.push(r.u64("used pages")?);
            }
            for p in 0..s.per {
                if used[(p / 64) as usize] >> (p % 64) & 1 == 0 {
                    s.free.insert(c as u64 * s.per + p);
                }
            }
            s.chunks.push(Some(cs));
            s.used.push(used);
        }
        Ok(s)
    }
}

/// The page space bound to the shard's devices and allocator for one
/// metadata operation.
pub(super) struct DevPages<'a> {
    pub(super) devs: &'a mut [Option<Dev>],
    pub(super) space: &'a mut PageSpace,
    pub(super) slots: &'a mut Slots,
    pub(super) layout: &'a Layout,
}

impl DevPages<'_> {
    /// The first block of page `addr` in the chunk slot `slot`.
    fn lba(&self, slot: u64, addr: PageAddr) -> u64 {
        let per_page = PAGE as u64 / u64::from(self.layout.block_size);
        self.layout.slot_lba(slot) + (addr % self.space.per) * per_page
    }

    fn io_error(addr: PageAddr, e: IoError) -> TreeError {
        TreeError::Io {
            page: addr,
            errno: e.errno().abs(),
        }
    }
}

impl PageIo for DevPages<'_> {
    fn read(&mut self, addr: PageAddr, out: &mut [u8]) -> Result<(), TreeError> {
        let copies = self
            .space
            .copies_of((addr / self.space.per) as usize)
            .to_vec();
        let blocks = (PAGE / self.layout.block_size as usize) as u32;
        let buf = Scratch::new(PAGE).map_err(|_| TreeError::Io {
            page: addr,
            errno: libc::ENOMEM,
        })?;
        let mut damaged = Vec::new();
        let mut last = TreeError::Io {
            page: addr,
            errno: libc::ENODEV,
        };
        for &(d, slot) in &copies {
            let cmd = IoCmd::read(self.lba(slot, addr), blocks, buf.0.as_ptr(), 0);
            match run_io(self.devs, &[(usize::from(d), cmd)]).remove(0) {
                Ok(_) if btree::intact(addr, &buf.0.as_slice()[..PAGE]) => {
                    out.copy_from_slice(&buf.0.as_slice()[..PAGE]);
                    // Heal the copies read before this one.
                    let cmds: Vec<(usize, IoCmd)> = damaged
                        .iter()
                        .map(|&(d, slot)| {
                            let lba = self.lba(slot, addr);
                            (usize::from(d), IoCmd::write(lba, blocks, buf.0.as_ptr(), 0))
                        })
                        .collect();
                    for r in run_io(self.devs, &cmds) {
                        if r.is_ok() {
                            self.space.healed += 1;
                        }
                    }
                    return Ok(());
                }
                Ok(_) => {
                    out.copy_from_slice(&buf.0.as_slice()[..PAGE]);
                    last = TreeError::Corrupt {
                        page: addr,
                        what: "page checksum",
                    };
                    damaged.push((d, slot));
                }
                Err(e) => {
                    mark_failed(self.devs, usize::from(d), "metadata page read");
                    last = Self::io_error(addr, e);
                }
            }
        }
        Err(last)
    }

    fn read_ahead(&mut self, addrs: &[PageAddr]) -> Vec<Option<Vec<u8>>> {
        let mut out = vec![None; addrs.len()];
        let Ok(buf) = Scratch::new(PAGE * addrs.len().max(1)) else {
            return out;
        };
        let blocks = (PAGE / self.layout.block_size as usize) as u32;
        // Each page from its first copy on a healthy device, all at once.
        let mut cmds = Vec::with_capacity(addrs.len());
        let mut which = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let copy = self
                .space
                .copies_of((addr / self.space.per) as usize)
                .iter()
                .copied()
                .find(|&(d, _)| {
                    self.devs
                        .get(usize::from(d))
                        .is_some_and(|x| x.as_ref().is_some_and(|x| !x.failed))
                });
            if let Some((d, slot)) = copy {
                // Page i's part of `buf`, which outlives the batch.
                let at = buf.0.as_ptr().wrapping_add(i * PAGE);
                cmds.push((
                    usize::from(d),
                    IoCmd::read(self.lba(slot, addr), blocks, at, 0),
                ));
                which.push(i);
            }
        }
        let bytes = buf.0.as_slice();
        for (r, i) in run_io(self.devs, &cmds).into_iter().zip(which) {
            let page = &bytes[i * PAGE..(i + 1) * PAGE];
            if r.is_ok() && btree::intact(addrs[i], page) {
                out[i] = Some(page.to_vec());
            }
        }
        out
    }

    fn alloc(&mut self) -> Result<PageAddr, TreeError> {
        if let Some(a) = self.space.free.pop_first() {
            self.space.set_used(a, true);
            return Ok(a);
        }
        let copies = reserve_slots(self.devs, self.slots, self.space.copies)
            .map_err(|_| TreeError::NoSpace)?;
        let n = match self.space.chunks.iter().position(Option::is_none) {
            Some(n) => {
                self.space.chunks[n] = Some(copies);
                n
            }
            None => {
                self.space.chunks.push(Some(copies));
                self.space.used.push(vec![0; self.space.words()]);
                self.space.chunks.len() - 1
            }
        };
        let first = n as u64 * self.space.per;
        self.space.free.extend(first + 1..first + self.space.per);
        self.space.set_used(first, true);
        Ok(first)
    }

    fn write(&mut self, pages: &[(PageAddr, Vec<u8>)]) -> Result<(), TreeError> {
        if pages.is_empty() {
            return Ok(());
        }
        let mut order: Vec<usize> = (0..pages.len()).collect();
        order.sort_unstable_by_key(|&i| pages[i].0);
        let mut buf = Scratch::new(pages.len() * PAGE).map_err(|_| TreeError::NoSpace)?;
        for (at, &i) in order.iter().enumerate() {
            debug_assert!(self.space.is_used(pages[i].0), "page written unallocated");
            buf.0.as_mut_slice()[at * PAGE..(at + 1) * PAGE].copy_from_slice(&pages[i].1);
        }
        // Runs of consecutive pages in one chunk, at most MAX_IO each.
        let bpp = (PAGE / self.layout.block_size as usize) as u32;
        let mut cmds: Vec<(usize, IoCmd)> = Vec::new();
        let mut runs: Vec<(usize, usize)> = Vec::new(); // (first index, pages)
        for at in 0..order.len() {
            let addr = pages[order[at]].0;
            match runs.last_mut() {
                Some((first, n))
                    if pages[order[*first]].0 + *n as u64 == addr
                        && !addr.is_multiple_of(self.space.per)
                        && (*n + 1) * PAGE <= MAX_IO =>
                {
                    *n += 1
                }
                _ => runs.push((at, 1)),
            }
        }
        let mut run_of = Vec::new();
        for (r, &(first, n)) in runs.iter().enumerate() {
            let addr = pages[order[first]].0;
            for &(d, slot) in self.space.copies_of((addr / self.space.per) as usize) {
                // The run's pages are contiguous in `buf` from `first`.
                let p = buf.0.as_ptr().wrapping_add(first * PAGE);
                cmds.push((
                    usize::from(d),
                    IoCmd::write(self.lba(slot, addr), n as u32 * bpp, p, 0),
                ));
                run_of.push(r);
            }
        }
        let results = run_io(self.devs, &cmds);
        let mut ok = vec![false; runs.len()];
        let mut err = None;
        for ((&(d, _), r), &run) in cmds.iter().zip(results).zip(&run_of) {
            match r {
                Ok(_) => ok[run] = true,
                Err(e) => {
                    mark_failed(self.devs, d, "metadata page write");
                    err = Some(Self::io_error(pages[order[runs[run].0]].0, e));
                }
            }
        }
        match ok.iter().all(|x| *x) {
            true => Ok(()),
            false => Err(err.unwrap_or(TreeError::Io {
                page: 0,
                errno: libc::EIO,
            })),
        }
    }
}
