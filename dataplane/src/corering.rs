//! The reactor's own io_uring: one ring per core for every device it drives,
//! and the thing the reactor sleeps in.
//!
//! Queue pairs of `uring` devices on a core share this ring (SPDK's uring
//! bdev does the same per thread): each device's file takes a slot in the
//! ring's registered-file table, DMA pools are registered as fixed buffers
//! once, and completions are sorted into per-queue-pair sinks by the
//! `user_data` tag (`sink << 32 | slot`). The reactor rings the doorbell once
//! per loop iteration for all devices ([`CoreRing::submit`]).
//!
//! Parking: the ring keeps a multishot poll armed on the reactor's eventfd,
//! so an idle reactor waits in a single `io_uring_enter` that submits what is
//! queued and returns on the first device completion, cross-core wake-up or
//! timer deadline — one system call per sleep, where a separate eventfd wait
//! would cost three or four.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::{Error, IoError, Result};
use crate::mempool::DmaRegion;

const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 8192;
const FILE_SLOTS: u32 = 256;
const BUF_SLOTS: u32 = 64;
/// Completions of watched descriptors carry `WAKE_TAG - i` (watch 0 is the
/// reactor's eventfd).
const WAKE_TAG: u64 = u64::MAX;
/// Descriptors a ring may watch.
const MAX_WATCHES: usize = 64;
/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h).
pub(crate) const IORING_ENTER_GETEVENTS: u32 = 1;

/// One queue pair's completions: (slot, result), at most its depth.
struct Sink {
    items: Box<[(u32, i32)]>,
    head: usize,
    len: usize,
    live: bool,
}

/// A reactor's io_uring.
pub struct CoreRing {
    ring: IoUring,
    deferred: bool,
    /// Descriptors whose readiness ends a wait, each with whether its poll
    /// is armed. The first is the reactor's eventfd (a multishot poll; a
    /// wake-up to drain); the others (sockets its pollers read) get a
    /// one-shot poll armed before each wait, which completes at once if
    /// the descriptor is readable then.
    watches: Vec<(RawFd, bool)>,
    woken: bool,
    queued: u32,
    files: Vec<Option<RawFd>>,
    /// Fixed-buffer slots: (start, end, queue pairs using it).
    regions: Vec<Option<(usize, usize, u32)>>,
    sinks: Vec<Sink>,
}

fn os(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Os { op, source }
}

impl CoreRing {
    /// Creates the ring; `wake_fd` is the reactor's eventfd.
    pub fn new(wake_fd: RawFd) -> Result<Self> {
        // Completion work runs only when this thread asks for it (deferred
        // task-run), in batches, instead of interrupting the reactor; the
        // TASKRUN flag tells us when there is some. Older kernels lack these
        // flags, and then completions are posted as they happen.
        let (ring, deferred) = match IoUring::builder()
            .dontfork()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES)
        {
            Ok(r) => (r, true),
            Err(_) => (
                IoUring::builder()
                    .dontfork()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
                    .map_err(os("io_uring setup (core ring)"))?,
                false,
            ),
        };
        ring.submitter()
            .register_files_sparse(FILE_SLOTS)
            .map_err(os("io_uring register files"))?;
        ring.submitter()
            .register_buffers_sparse(BUF_SLOTS)
            .map_err(os("io_uring register buffers"))?;
        Ok(CoreRing {
            ring,
            deferred,
            watches: vec![(wake_fd, false)],
            woken: false,
            queued: 0,
            files: Vec::new(),
            regions: Vec::new(),
            sinks: Vec::new(),
        })
    }

    /// Registers a file; returns its fixed-file slot.
    pub fn add_file(&mut self, fd: RawFd) -> Result<u32> {
        let slot = match self.files.iter().position(Option::is_none) {
            Some(i) => i,
            None if (self.files.len() as u32) < FILE_SLOTS => {
                self.files.push(None);
                self.files.len() - 1
            }
            None => {
                return Err(Error::Os {
                    op: "io_uring register file",
                    source: io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!("more than {FILE_SLOTS} devices on one core"),
                    ),
                })
            }
        };
        self.ring
            .submitter()
            .register_files_update(slot as u32, &[fd])
            .map_err(os("io_uring register file"))?;
        self.files[slot] = Some(fd);
        Ok(slot as u32)
    }

    /// Frees a fixed-file slot.
    pub fn remove_file(&mut self, slot: u32) {
        if let Some(f) = self.files.get_mut(slot as usize) {
            let _ = self.ring.submitter().register_files_update(slot, &[-1]);
            *f = None;
        }
    }

    /// Registers a region as a fixed buffer for one more user; returns the
    /// range to hand back to [`CoreRing::release_region`].
    ///
    /// # Safety
    /// The region must stay mapped until the matching `release_region`.
    pub unsafe fn register_region(&mut self, region: &DmaRegion) -> Result<(usize, usize)> {
        let (start, end) = (
            region.as_ptr() as usize,
            region.as_ptr() as usize + region.len(),
        );
        for (s, e, users) in self.regions.iter_mut().flatten() {
            if (*s, *e) == (start, end) {
                *users += 1;
                return Ok((start, end));
            }
        }
        let slot = match self.regions.iter().position(Option::is_none) {
            Some(i) => i,
            None if (self.regions.len() as u32) < BUF_SLOTS => {
                self.regions.push(None);
                self.regions.len() - 1
            }
            None => {
                return Err(Error::Os {
                    op: "io_uring register buffers",
                    source: io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!("more than {BUF_SLOTS} DMA regions on one core"),
                    ),
                })
            }
        };
        let iov = libc::iovec {
            iov_base: region.as_ptr().cast(),
            iov_len: region.len(),
        };
        // SAFETY: the iovec describes a live mapping the caller keeps alive
        // until it releases the registration.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot as u32, &[iov], None)
        }
        .map_err(os("io_uring register buffers"))?;
        self.regions[slot] = Some((start, end, 1));
        Ok((start, end))
    }

    /// Drops one user of a registered region; the last one unregisters it, so
    /// a later mapping at the same address can never hit stale pages.
    pub fn release_region(&mut self, range: (usize, usize)) {
        for (i, r) in self.regions.iter_mut().enumerate() {
            if let Some((s, e, users)) = r {
                if (*s, *e) == range {
                    *users -= 1;
                    if *users == 0 {
                        let empty = libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        };
                        // SAFETY: an empty iovec clears the slot.
                        let _ = unsafe {
                            self.ring
                                .submitter()
                                .register_buffers_update(i as u32, &[empty], None)
                        };
                        *r = None;
                    }
                    return;
                }
            }
        }
    }

    /// The fixed-buffer index covering `[ptr, ptr + len)`, if registered.
    #[inline]
    pub fn fixed_index(&self, ptr: *const u8, len: usize) -> Option<u16> {
        let p = ptr as usize;
        self.regions
            .iter()
            .position(|r| r.is_some_and(|(s, e, _)| p >= s && p + len <= e))
            .map(|i| i as u16)
    }

    /// Creates a completion sink for a queue pair of `depth`.
    pub fn add_sink(&mut self, depth: u32) -> u32 {
        let sink = Sink {
            items: vec![(0, 0); depth as usize].into_boxed_slice(),
            head: 0,
            len: 0,
            live: true,
        };
        match self.sinks.iter().position(|s| !s.live) {
            Some(i) => {
                self.sinks[i] = sink;
                i as u32
            }
            None => {
                self.sinks.push(sink);
                self.sinks.len() as u32 - 1
            }
        }
    }

    /// Retires a sink (its queue pair has no command in flight).
    pub fn remove_sink(&mut self, sink: u32) {
        if let Some(s) = self.sinks.get_mut(sink as usize) {
            s.live = false;
            s.len = 0;
        }
    }

    /// Queues an entry tagged for `sink`/`slot`; it is submitted with the
    /// reactor's next doorbell.
    ///
    /// # Safety
    /// Every buffer the entry refers to must stay valid until its completion
    /// has been taken from the sink.
    #[inline]
    pub unsafe fn push(
        &mut self,
        entry: squeue::Entry,
        sink: u32,
        slot: u32,
    ) -> Result<(), IoError> {
        let entry = entry.user_data((u64::from(sink) << 32) | u64::from(slot));
        // SAFETY: forwarded from the caller's guarantee.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            // SQ full: submit what is queued and try once more.
            self.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                return Err(IoError::QueueFull);
            }
        }
        self.queued += 1;
        Ok(())
    }

    /// Submits every queued entry with one system call.
    #[inline]
    pub fn submit(&mut self) {
        if self.queued == 0 {
            return;
        }
        // EBUSY/EAGAIN leave entries queued; the next doorbell retries them.
        if let Ok(n) = self.ring.submit() {
            self.queued = self.queued.saturating_sub(n as u32);
        }
    }

    /// Entries queued but not yet submitted.
    pub fn queued(&self) -> u32 {
        self.queued
    }

    /// Sorts every posted completion into its sink; returns how many.
    #[inline]
    pub fn reap(&mut self) -> usize {
        if self.deferred {
            let sq = self.ring.submission();
            if sq.taskrun() || sq.cq_overflow() {
                drop(sq);
                // SAFETY: GETEVENTS with no wait and no argument pointers
                // only runs deferred completion work into the CQ ring.
                let _ = unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        0,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                };
            }
        }
        let mut n = 0;
        for cqe in self.ring.completion() {
            let tag = cqe.user_data();
            if tag > WAKE_TAG - MAX_WATCHES as u64 {
                let i = (WAKE_TAG - tag) as usize;
                if i == 0 {
                    self.woken = true;
                }
                if !cqueue::more(cqe.flags()) {
                    if let Some(w) = self.watches.get_mut(i) {
                        w.1 = false;
                    }
                }
                continue;
            }
            let (sink, slot) = ((tag >> 32) as usize, tag as u32);
            if let Some(s) = self.sinks.get_mut(sink).filter(|s| s.live) {
                if s.len < s.items.len() {
                    let i = (s.head + s.len) % s.items.len();
                    s.items[i] = (slot, cqe.result());
                    s.len += 1;
                    n += 1;
                }
            }
        }
        n
    }

    /// Ends the reactor's waits when `fd` is readable (a socket its
    /// pollers read), so it may sleep instead of waking on a timer to look.
    pub fn watch(&mut self, fd: RawFd) -> Result<()> {
        // A slot whose descriptor was unwatched and whose poll has
        // completed is free again (slot 0 is the reactor's eventfd).
        if let Some(w) = self.watches.iter_mut().skip(1).find(|w| w.0 < 0 && !w.1) {
            *w = (fd, false);
            return Ok(());
        }
        if self.watches.len() >= MAX_WATCHES {
            return Err(Error::Os {
                op: "watch a descriptor (a reactor watches at most 64 at once)",
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        self.watches.push((fd, false));
        Ok(())
    }

    /// Stops watching `fd`: its poll is removed at once (a pending poll
    /// holds the file open in the kernel, so a socket would outlive its
    /// close), before the caller closes it.
    pub fn unwatch(&mut self, fd: RawFd) {
        let Some(i) = self.watches.iter().position(|w| w.0 == fd && fd >= 0) else {
            return;
        };
        let armed = self.watches[i].1;
        // A tombstone keeps the other watches' tags; it is free for another
        // descriptor once its poll (if armed) has completed.
        self.watches[i] = (-1, armed);
        if armed {
            let rm = opcode::PollRemove::new(WAKE_TAG - i as u64)
                .build()
                .user_data(WAKE_TAG - MAX_WATCHES as u64);
            // SAFETY: a poll removal references no memory.
            if unsafe { self.ring.submission().push(&rm) }.is_ok() {
                if let Ok(n) = self.ring.submit() {
                    self.queued = self.queued.saturating_sub(n as u32);
                }
            }
        }
    }

    /// Takes up to `out.len()` completions of `sink`.
    #[inline]
    pub fn take(&mut self, sink: u32, out: &mut [(u32, i32)]) -> usize {
        let Some(s) = self.sinks.get_mut(sink as usize) else {
            return 0;
        };
        let n = s.len.min(out.len());
        for o in out.iter_mut().take(n) {
            *o = s.items[s.head];
            s.head = (s.head + 1) % s.items.len();
        }
        s.len -= n;
        n
    }

    /// Sleeps in the kernel until a completion, a wake-up on the reactor's
    /// eventfd, or `timeout`; submits queued entries on the way in. Returns
    /// whether a wake-up (not a completion) ended the wait.
    pub fn wait(&mut self, timeout: Option<Duration>) -> bool {
        for i in 0..self.watches.len() {
            let (fd, armed) = self.watches[i];
            if armed || fd < 0 {
                continue;
            }
            let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .multi(i == 0)
                .build()
                .user_data(WAKE_TAG - i as u64);
            // SAFETY: a poll entry references no memory.
            if unsafe { self.ring.submission().push(&poll) }.is_ok() {
                self.queued += 1;
                self.watches[i].1 = true;
            }
        }
        let ts;
        let args = types::SubmitArgs::new();
        let res = match timeout {
            Some(t) => {
                ts = types::Timespec::from(t);
                self.ring
                    .submitter()
                    .submit_with_args(1, &args.timespec(&ts))
            }
            None => self.ring.submitter().submit_with_args(1, &args),
        };
        if let Ok(n) = res {
            self.queued = self.queued.saturating_sub(n as u32);
        }
        self.reap();
        std::mem::take(&mut self.woken)
    }

    /// Blocks until at least one completion is posted (used when a queue pair
    /// must drain before it is dropped).
    pub fn wait_one(&mut self) {
        let _ = self.ring.submit_and_wait(1);
    }
}
