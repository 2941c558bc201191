//! One submission/completion queue pair: entries written into the SQ ring
//! and the doorbell rung once per batch; completions reaped by phase bit
//! (the tag flips each time the CQ wraps) and the CQ doorbell rung once per
//! reap. Each outstanding command keeps its entry, its deadline and its
//! tries: a failed command without DNR is resubmitted within a budget; a
//! command past its deadline is reported for the caller to abort or reset.
//! PRPs describe each transfer (a list page per command when it spans more
//! than two pages).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cmd::{Cqe, Sqe, Status};
use super::dma::{DmaBuf, DmaMap, PAGE};
use super::regs::{Mmio, Regs};

/// A finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The submitter's tag.
    pub tag: u64,
    /// Dword 0 of the completion, or the failing status.
    pub result: Result<u32, Status>,
}

struct Outstanding {
    tag: u64,
    sqe: Sqe,
    deadline: Instant,
    tries: u8,
    aborted: bool,
}

/// A queue pair's state on the host.
pub struct QueuePair {
    qid: u16,
    entries: u16,
    sq: DmaBuf,
    cq: DmaBuf,
    prps: DmaBuf,
    tail: u16,
    sq_head: u16,
    head: u16,
    phase: bool,
    unrung: bool,
    slots: Vec<Option<Outstanding>>,
    free: Vec<u16>,
    timeout: Duration,
    retries: u8,
    /// A controller reset is under way: nothing reaches the rings.
    resetting: bool,
    /// Outstanding commands to write into the rings when it ends, oldest
    /// first.
    unsent: Vec<u16>,
}

impl QueuePair {
    /// Queue `qid` of `entries` entries (one is always left empty, so
    /// `entries - 1` commands fit), commands timing out after `timeout`,
    /// retried at most `retries` times.
    pub fn new(
        qid: u16,
        entries: u16,
        timeout: Duration,
        retries: u8,
        map: &Arc<dyn DmaMap>,
    ) -> std::io::Result<QueuePair> {
        assert!(entries >= 2, "a queue has at least two entries");
        let depth = usize::from(entries - 1);
        Ok(QueuePair {
            qid,
            entries,
            sq: DmaBuf::mapped(usize::from(entries) * 64, map)?,
            cq: DmaBuf::mapped(usize::from(entries) * 16, map)?,
            prps: DmaBuf::mapped(depth * PAGE, map)?,
            tail: 0,
            sq_head: 0,
            head: 0,
            phase: true,
            unrung: false,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth as u16).rev().collect(),
            timeout,
            retries,
            resetting: false,
            unsent: Vec::new(),
        })
    }

    /// Its queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries of each ring.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The SQ ring's bus address.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    /// The CQ ring's bus address.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Commands submitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Commands it holds at most.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    fn sq_full(&self) -> bool {
        (self.tail + 1) % self.entries == self.sq_head
    }

    fn push(&mut self, sqe: &Sqe) {
        debug_assert!(!self.sq_full());
        self.sq.write(usize::from(self.tail) * 64, &sqe.0);
        self.tail = (self.tail + 1) % self.entries;
        self.unrung = true;
    }

    /// Queues `sqe` with data at bus address `data` of `len` bytes (0: no
    /// data); returns its command identifier, or `None` when full. The data
    /// must be contiguous in bus addresses and stay valid until it is done.
    pub fn submit(&mut self, mut sqe: Sqe, data: u64, len: usize, tag: u64) -> Option<u16> {
        if !self.resetting && self.sq_full() {
            return None;
        }
        let cid = self.free.pop()?;
        sqe.set_cid(cid);
        if len > 0 {
            let (p1, p2) = self.prps_for(cid, data, len);
            sqe.set_prps(p1, p2);
        }
        if self.resetting {
            self.unsent.push(cid);
        } else {
            self.push(&sqe);
        }
        self.slots[usize::from(cid)] = Some(Outstanding {
            tag,
            sqe,
            deadline: Instant::now() + self.timeout,
            tries: 0,
            aborted: false,
        });
        Some(cid)
    }

    /// PRP1 and PRP2 for a transfer: PRP2 is the second page, or a list of
    /// the pages after the first (in this command's list page).
    fn prps_for(&mut self, cid: u16, data: u64, len: usize) -> (u64, u64) {
        let first = PAGE - (data as usize % PAGE);
        if len <= first {
            return (data, 0);
        }
        let second = data + first as u64;
        if len <= first + PAGE {
            return (data, second);
        }
        let pages = (len - first).div_ceil(PAGE);
        assert!(pages <= PAGE / 8, "transfer above one PRP list page (MDTS)");
        let base = usize::from(cid) * PAGE;
        for i in 0..pages {
            let a = second + (i * PAGE) as u64;
            self.prps.write(base + i * 8, &a.to_le_bytes());
        }
        (data, self.prps.iova() + base as u64)
    }

    /// Rings the SQ doorbell if entries were queued since the last ring.
    pub fn ring<M: Mmio>(&mut self, regs: &Regs<M>) {
        if self.unrung && !self.resetting {
            // The entries are in memory before the device hears of them.
            fence(Ordering::Release);
            regs.sq_doorbell(self.qid, self.tail);
            self.unrung = false;
        }
    }

    /// Reaps completions into `out` (failed commands without DNR are queued
    /// again while they have tries left), rings the CQ doorbell once, and
    /// rings the SQ doorbell for any resubmission. Returns how many finished.
    pub fn reap<M: Mmio>(&mut self, regs: &Regs<M>, out: &mut Vec<Done>) -> usize {
        if self.resetting {
            return 0;
        }
        let mut n = 0;
        let mut reaped = false;
        loop {
            // The phase tag first (the status word's low bit), the rest
            // after it.
            let mut st = [0u8; 2];
            self.cq.read(usize::from(self.head) * 16 + 14, &mut st);
            if (st[0] & 1 != 0) != self.phase {
                break;
            }
            fence(Ordering::Acquire);
            let mut b = [0u8; 16];
            self.cq.read(usize::from(self.head) * 16, &mut b);
            let c = Cqe::read(&b);
            reaped = true;
            self.head += 1;
            if self.head == self.entries {
                self.head = 0;
                self.phase = !self.phase;
            }
            if c.sqhd < self.entries {
                self.sq_head = c.sqhd;
            }
            let room = !self.sq_full();
            let Some(slot) = self.slots.get_mut(usize::from(c.cid)) else {
                continue;
            };
            let Some(o) = slot.as_mut() else {
                // A completion for no outstanding command (a late one after
                // an abort): ignored.
                continue;
            };
            if !c.status.ok() && !c.status.dnr && o.tries < self.retries && room {
                o.tries += 1;
                o.deadline = Instant::now() + self.timeout;
                let sqe = o.sqe;
                self.push(&sqe);
                continue;
            }
            let o = slot.take().expect("checked above");
            self.free.push(c.cid);
            out.push(Done {
                tag: o.tag,
                result: if c.status.ok() {
                    Ok(c.dw0)
                } else {
                    Err(c.status)
                },
            });
            n += 1;
        }
        if reaped {
            regs.cq_doorbell(self.qid, self.head);
        }
        self.ring(regs);
        n
    }

    /// Commands past their deadline at `now`: (cid, tag).
    pub fn expired(&self, now: Instant) -> Vec<(u16, u64)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|o| o.deadline <= now)
                    .map(|o| (i as u16, o.tag))
            })
            .collect()
    }

    /// Marks a command aborted (an Abort was sent for it) and gives it
    /// `by` more time.
    pub fn mark_aborted(&mut self, cid: u16, by: Duration) {
        if let Some(Some(o)) = self.slots.get_mut(usize::from(cid)) {
            o.deadline = Instant::now() + by;
            o.aborted = true;
        }
    }

    /// Whether an Abort was already sent for command `cid`.
    pub fn aborted(&self, cid: u16) -> bool {
        matches!(self.slots.get(usize::from(cid)), Some(Some(o)) if o.aborted)
    }

    /// A controller reset begins: the rings are emptied (the controller
    /// forgets them) and every outstanding command waits, with those
    /// submitted meanwhile, for [`QueuePair::resume`].
    pub fn begin_reset(&mut self) {
        let mut out: Vec<(Instant, u16)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|o| (o.deadline, i as u16)))
            .filter(|(_, cid)| !self.unsent.contains(cid))
            .collect();
        out.sort_unstable();
        self.unsent.splice(0..0, out.into_iter().map(|(_, c)| c));
        self.resetting = true;
        self.tail = 0;
        self.sq_head = 0;
        self.head = 0;
        self.phase = true;
        self.unrung = false;
        let z = vec![0u8; self.cq.len()];
        self.cq.write(0, &z);
    }

    /// The queue pair exists again on the controller: every command that
    /// waited goes into the ring (ring the doorbell next).
    pub fn resume(&mut self) {
        self.resetting = false;
        let now = Instant::now();
        for cid in std::mem::take(&mut self.unsent) {
            if let Some(o) = self.slots[usize::from(cid)].as_mut() {
                o.deadline = now + self.timeout;
                o.aborted = false;
                let sqe = o.sqe;
                debug_assert!(!self.sq_full(), "more outstanding than the ring holds");
                self.push(&sqe);
            }
        }
    }
}
