//! Per-core counters, written by their reactor and readable by anyone.
//!
//! Each counter has one writer (its reactor), so updates are a plain load and
//! store, never a locked read-modify-write; readers on other threads see
//! values that are at most one update stale.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock;

/// One reactor's live counters.
#[derive(Debug, Default)]
pub struct CoreStats {
    polls: AtomicU64,
    busy_polls: AtomicU64,
    busy_ticks: AtomicU64,
    start_ticks: AtomicU64,
    parks: AtomicU64,
    messages: AtomicU64,
    ios: AtomicU64,
    io_errors: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl CoreStats {
    pub(crate) fn started(&self) {
        self.start_ticks.store(clock::ticks(), Ordering::Relaxed);
    }

    pub(crate) fn poll(&self, busy: bool, ticks: u64) {
        bump(&self.polls, 1);
        if busy {
            bump(&self.busy_polls, 1);
            bump(&self.busy_ticks, ticks);
        }
    }

    pub(crate) fn parked(&self) {
        bump(&self.parks, 1);
    }

    /// Counts `n` messages handled (call only from the owning reactor).
    #[inline]
    pub fn add_messages(&self, n: u64) {
        bump(&self.messages, n);
    }

    /// Counts `n` I/Os completed (call only from the owning reactor).
    #[inline]
    pub fn add_ios(&self, n: u64) {
        bump(&self.ios, n);
    }

    /// Counts `n` I/O errors (call only from the owning reactor).
    #[inline]
    pub fn add_io_errors(&self, n: u64) {
        bump(&self.io_errors, n);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self, core: usize) -> CoreStatsSnapshot {
        let start = self.start_ticks.load(Ordering::Relaxed);
        let elapsed = clock::ticks().saturating_sub(start).max(1);
        let busy = self.busy_ticks.load(Ordering::Relaxed);
        CoreStatsSnapshot {
            core,
            polls: self.polls.load(Ordering::Relaxed),
            busy_polls: self.busy_polls.load(Ordering::Relaxed),
            busy_ratio: if start == 0 {
                0.0
            } else {
                (busy as f64 / elapsed as f64).min(1.0)
            },
            parks: self.parks.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            ios: self.ios.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one reactor's counters.
#[derive(Debug, Clone, Serialize)]
pub struct CoreStatsSnapshot {
    /// The CPU the reactor runs on.
    pub core: usize,
    /// Loop iterations.
    pub polls: u64,
    /// Iterations in which some poller found work.
    pub busy_polls: u64,
    /// Share of wall time spent in busy iterations since start.
    pub busy_ratio: f64,
    /// Times the reactor parked (adaptive mode).
    pub parks: u64,
    /// Messages and tasks handled.
    pub messages: u64,
    /// I/Os completed.
    pub ios: u64,
    /// I/Os completed with an error.
    pub io_errors: u64,
}
