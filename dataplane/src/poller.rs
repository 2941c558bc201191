//! Pollers: the units of work a reactor runs every loop iteration.
//!
//! A poller owns whatever it drives (a queue pair and its buffers, the
//! receiving ends of message rings, a NIC queue) and reports whether it found
//! work, as SPDK's pollers do; the reactor uses that to account busy time and
//! to decide when an adaptive reactor may park.

use crate::reactor::Core;

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// Work was done; poll again soon.
    Busy,
    /// Nothing to do.
    Idle,
    /// The poller has finished; the reactor drops it.
    Done,
}

impl PollStatus {
    /// `Busy` if `work` is true, else `Idle`.
    pub fn from_work(work: bool) -> Self {
        if work {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// Work a reactor polls.
pub trait Poller {
    /// A short name for logs.
    fn name(&self) -> &str {
        "poller"
    }

    /// Does whatever work is ready, without blocking.
    fn poll(&mut self, core: &mut Core) -> PollStatus;

    /// Operations in flight (submitted, not completed). A stopping reactor
    /// keeps polling until this is zero for every poller, or its drain
    /// timeout passes.
    fn in_flight(&self) -> usize {
        0
    }

    /// The reactor is stopping: submit no new work, finish what is in flight.
    fn stop(&mut self, _core: &mut Core) {}
}

/// A poller made of a closure.
pub struct FnPoller<F> {
    name: &'static str,
    f: F,
}

/// Wraps a closure as a poller.
pub fn poller_fn<F: FnMut(&mut Core) -> PollStatus>(name: &'static str, f: F) -> FnPoller<F> {
    FnPoller { name, f }
}

impl<F: FnMut(&mut Core) -> PollStatus> Poller for FnPoller<F> {
    fn name(&self) -> &str {
        self.name
    }

    fn poll(&mut self, core: &mut Core) -> PollStatus {
        (self.f)(core)
    }
}
