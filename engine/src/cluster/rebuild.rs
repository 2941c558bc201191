//! Rebuilding a bucket onto its survivors: while a slot of the bucket is
//! lost (its node down, or its slice failed), the bucket's engine moves
//! the chunks that slot held onto the other slots' slices, a few stripes
//! per step and the most damaged first, so every stripe is back to k+m
//! without the lost node.
//!
//! Stripes left with no redundancy are rebuilt at once; the others wait
//! for a grace period (a node that restarts within it costs nothing). A
//! lost slot whose node is under maintenance is not rebuilt at all. The
//! steps run on the bucket's reactor, paced so they take at most a share
//! of its time: foreground I/O keeps the rest. Each step is durable on its
//! own, so a restart, a new owner or a second loss resumes the work where
//! it stood.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::store::Evacuation;

/// How lost slots are rebuilt (`[cluster] rebuild_grace`, `rebuild_share`).
#[derive(Debug, Clone, Copy)]
pub struct RebuildPolicy {
    /// Stripes that still have redundancy wait this long for the lost
    /// node to return before they are rebuilt elsewhere.
    pub grace: Duration,
    /// The largest share of the bucket reactor's time rebuilding takes
    /// (0 < share ≤ 1).
    pub share: f64,
    /// Stripes per step.
    pub step: usize,
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        RebuildPolicy {
            grace: Duration::from_secs(10),
            share: 0.25,
            step: 16,
        }
    }
}

/// What a bucket's rebuild is doing, for `/v1/cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebuildState {
    /// Nothing is lost.
    Healthy,
    /// Only stripes with no redundancy left are rebuilt until the grace
    /// period ends.
    Grace,
    /// Rebuilding.
    Rebuilding,
    /// The lost slots' nodes are under maintenance: nothing is rebuilt.
    Maintenance,
    /// Every stripe is back to full redundancy without the lost slots.
    Done,
    /// Chunks have no healthy slot outside their stripe with free space:
    /// more nodes, or space, are needed.
    Stuck,
}

/// A bucket's health as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct BucketHealth {
    /// The map epoch the bucket was opened at.
    pub epoch: u64,
    /// Slots lost (their node down, or their slice failed).
    pub lost: Vec<usize>,
    /// What the rebuild is doing.
    pub rebuild: RebuildState,
    /// Stripes with a chunk on a lost slot.
    pub remaining_stripes: u64,
    /// Of those, stripes with no redundancy left.
    pub unprotected_stripes: u64,
    /// Metadata page chunks with a copy on a lost slot.
    pub remaining_pages: u64,
    /// Chunks rebuilt onto survivors since the loss.
    pub relocated_chunks: u64,
    /// Seconds since the loss was first seen.
    pub lost_for_s: f64,
    /// Seconds the rebuild's steps have taken, in all.
    pub busy_s: f64,
}

/// One bucket's rebuild onto its survivors.
#[derive(Debug)]
pub struct Rebuild {
    policy: RebuildPolicy,
    lost: BTreeSet<usize>,
    since: Option<Instant>,
    next: Instant,
    last: Evacuation,
    state: RebuildState,
    relocated: u64,
    busy: Duration,
}

/// The longest a tick runs steps for (the host's other buckets wait).
const TICK_WORK: Duration = Duration::from_millis(50);
/// How often a finished or stuck rebuild looks again.
const RECHECK: Duration = Duration::from_secs(5);

impl Rebuild {
    /// A rebuild with nothing lost.
    pub fn new(policy: RebuildPolicy) -> Rebuild {
        debug_assert!(policy.share > 0.0 && policy.share <= 1.0);
        Rebuild {
            policy,
            lost: BTreeSet::new(),
            since: None,
            next: Instant::now(),
            last: Evacuation::default(),
            state: RebuildState::Healthy,
            relocated: 0,
            busy: Duration::ZERO,
        }
    }

    /// Runs the steps due now on `engine`, whose lost slots are `lost`;
    /// `maintenance`: every lost slot's node is under planned maintenance.
    /// Returns true when the rebuild has just finished.
    pub fn tick(
        &mut self,
        engine: &Engine,
        lost: &BTreeSet<usize>,
        maintenance: bool,
    ) -> Result<bool, String> {
        if lost.is_empty() {
            *self = Rebuild::new(self.policy);
            return Ok(false);
        }
        let now = Instant::now();
        if *lost != self.lost {
            // A new loss: everything it left behind is looked at again now.
            self.lost = lost.clone();
            self.since.get_or_insert(now);
            self.next = now;
            self.state = RebuildState::Grace;
        }
        if maintenance {
            self.state = RebuildState::Maintenance;
            return Ok(false);
        }
        if self.state == RebuildState::Maintenance {
            self.state = RebuildState::Grace;
        }
        let since = *self.since.get_or_insert(now);
        let urgent_only = now.duration_since(since) < self.policy.grace;
        let was_done = self.state == RebuildState::Done;
        let mut worked = Duration::ZERO;
        while Instant::now() >= self.next && worked < TICK_WORK {
            let t0 = Instant::now();
            let r = engine
                .evacuate(self.policy.step, urgent_only)
                .map_err(|e| format!("rebuild step: {e}"))?;
            let dt = t0.elapsed();
            worked += dt;
            self.busy += dt;
            self.relocated += r.relocated_chunks;
            self.last = r;
            let idle = self.policy.share.recip() - 1.0;
            self.next = Instant::now() + dt.mul_f64(idle);
            if r.done() {
                self.state = RebuildState::Done;
                self.next = Instant::now() + RECHECK;
                break;
            }
            if r.relocated_chunks == 0 && r.relocated_pages == 0 {
                // Waiting for the grace period, or stuck.
                self.state = if r.stuck_chunks > 0 {
                    RebuildState::Stuck
                } else {
                    RebuildState::Grace
                };
                self.next = Instant::now() + RECHECK.min(self.policy.grace / 4);
                break;
            }
            self.state = if urgent_only {
                RebuildState::Grace
            } else {
                RebuildState::Rebuilding
            };
        }
        Ok(!was_done && self.state == RebuildState::Done)
    }

    /// The bucket's health, opened at `epoch`.
    pub fn health(&self, epoch: u64) -> BucketHealth {
        BucketHealth {
            epoch,
            lost: self.lost.iter().copied().collect(),
            rebuild: self.state,
            remaining_stripes: self.last.remaining_stripes,
            unprotected_stripes: self.last.unprotected_stripes,
            remaining_pages: self.last.remaining_pages,
            relocated_chunks: self.relocated,
            lost_for_s: self.since.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            busy_s: self.busy.as_secs_f64(),
        }
    }
}
