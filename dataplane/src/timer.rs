//! Per-reactor timers: one-shot and periodic callbacks on a deadline heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::clock;
use crate::reactor::Core;

/// Identifies a timer for cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId(u64);

type Callback = Box<dyn FnMut(&mut Core)>;

struct Entry {
    id: u64,
    period: Option<u64>,
    callback: Callback,
}

/// A reactor's timers.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    entries: Vec<Entry>,
    next_id: u64,
}

impl Timers {
    /// Adds a timer firing after `delay`, then every `period` if given.
    pub fn add(
        &mut self,
        delay: Duration,
        period: Option<Duration>,
        callback: Callback,
    ) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = clock::ticks() + clock::duration_to_ticks(delay);
        self.heap.push(Reverse((deadline, id)));
        self.entries.push(Entry {
            id,
            period: period.map(|p| clock::duration_to_ticks(p).max(1)),
            callback,
        });
        TimerId(id)
    }

    /// Cancels a timer; false if it had already fired (one-shot) or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.entries.iter().position(|e| e.id == id.0) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Ticks until the next deadline, if any timer is set.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Whether any timer is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the callback of the earliest expired timer.
    fn pop_due(&mut self, now: u64) -> Option<(u64, u64, Option<u64>, Callback)> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(i) = self.entries.iter().position(|e| e.id == id) {
                let e = self.entries.swap_remove(i);
                return Some((e.id, deadline, e.period, e.callback));
            }
        }
        None
    }

    fn reinsert(&mut self, id: u64, deadline: u64, period: u64, callback: Callback) {
        self.heap.push(Reverse((deadline, id)));
        self.entries.push(Entry {
            id,
            period: Some(period),
            callback,
        });
    }
}

/// Runs every expired timer of `core`; returns whether any ran.
pub(crate) fn run_due(core: &mut Core, now: u64) -> bool {
    let mut ran = false;
    while let Some((id, deadline, period, mut callback)) = core.timers_mut().pop_due(now) {
        ran = true;
        callback(core);
        if let Some(period) = period {
            // A periodic timer that fell behind skips the ticks it missed.
            let next = (deadline + period).max(now + 1);
            core.timers_mut().reinsert(id, next, period, callback);
        }
    }
    ran
}
