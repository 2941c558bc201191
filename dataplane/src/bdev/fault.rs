//! Fault injection (cargo feature `fault-injection`): a device wrapper that
//! fails chosen commands the way a sick drive would, so error paths are
//! tested for real: `EIO` on a block range, short transfers, a device that
//! has gone away. Rules can change while I/O runs.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use super::{BlockDevice, Completion, DoneQueue, Geometry, IoCmd, Opcode, QpairOptions, QueuePair};
use crate::error::{IoError, Result};
use crate::mempool::DmaRegion;
use crate::reactor::Core;

/// What a matching command suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Complete with this errno (e.g. `libc::EIO`, `libc::ENOSPC`).
    Errno(i32),
    /// Transfer only this many bytes.
    Short(u32),
}

/// A rule: commands of `op` (any op if `None`) touching `lbas` fail with `fault`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation to match, or all.
    pub op: Option<Opcode>,
    /// Block range to match (half-open).
    pub lbas: std::ops::Range<u64>,
    /// What happens.
    pub fault: Fault,
}

/// The shared set of rules of a faulty device.
#[derive(Debug)]
pub struct FaultPlan {
    rules: RwLock<Vec<Rule>>,
    /// Commands still allowed before everything fails (a power cut at an
    /// exact I/O); negative = unlimited.
    budget: AtomicI64,
    /// Whether any rule or budget is set (the common case, none, costs one
    /// load per command).
    armed: AtomicBool,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            rules: RwLock::new(Vec::new()),
            budget: AtomicI64::new(-1),
            armed: AtomicBool::new(false),
        }
    }
}

impl FaultPlan {
    /// Adds a rule.
    pub fn add(&self, rule: Rule) {
        if let Ok(mut r) = self.rules.write() {
            r.push(rule);
        }
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Makes every command fail with `EIO`, as a pulled drive would.
    pub fn fail_all(&self) {
        self.add(Rule {
            op: None,
            lbas: 0..u64::MAX,
            fault: Fault::Errno(libc::EIO),
        });
    }

    /// Removes every rule and any budget.
    pub fn clear(&self) {
        if let Ok(mut r) = self.rules.write() {
            r.clear();
        }
        self.budget.store(-1, Ordering::SeqCst);
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Lets `n` more commands through (on every device sharing this plan),
    /// then fails all of them with `EIO`: a power cut at an exact point.
    pub fn fail_after(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn check(&self, cmd: &IoCmd) -> Option<Fault> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        if self.budget.load(Ordering::SeqCst) >= 0
            && self.budget.fetch_sub(1, Ordering::SeqCst) <= 0
        {
            self.budget.store(0, Ordering::SeqCst);
            return Some(Fault::Errno(libc::EIO));
        }
        let rules = self.rules.read().ok()?;
        let end = cmd.lba + u64::from(cmd.blocks.max(1));
        rules
            .iter()
            .find(|r| {
                r.op.is_none_or(|op| op == cmd.op) && r.lbas.start < end && cmd.lba < r.lbas.end
            })
            .map(|r| r.fault)
    }
}

/// A device whose commands fail as its [`FaultPlan`] says.
pub struct FaultyDevice {
    inner: Arc<dyn BlockDevice>,
    plan: Arc<FaultPlan>,
}

impl FaultyDevice {
    /// Wraps `inner`; returns the device and its plan.
    pub fn wrap(inner: Arc<dyn BlockDevice>) -> (Arc<Self>, Arc<FaultPlan>) {
        let plan = Arc::new(FaultPlan::default());
        (
            Arc::new(FaultyDevice {
                inner,
                plan: plan.clone(),
            }),
            plan,
        )
    }
}

impl FaultyDevice {
    /// Wraps `inner` under an existing plan (so several devices can share
    /// one, e.g. one power-cut budget).
    pub fn wrap_shared(inner: Arc<dyn BlockDevice>, plan: Arc<FaultPlan>) -> Arc<Self> {
        Arc::new(FaultyDevice { inner, plan })
    }
}

impl BlockDevice for FaultyDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn queue_pair(&self, core: &mut Core, opts: &QpairOptions) -> Result<Box<dyn QueuePair>> {
        let inner = self.inner.queue_pair(core, opts)?;
        Ok(Box::new(FaultyQpair {
            geometry: self.inner.geometry(),
            done: DoneQueue::new(inner.depth()),
            inner,
            plan: self.plan.clone(),
        }))
    }
}

struct FaultyQpair {
    inner: Box<dyn QueuePair>,
    geometry: Geometry,
    plan: Arc<FaultPlan>,
    done: DoneQueue,
}

impl QueuePair for FaultyQpair {
    unsafe fn submit(&mut self, cmd: &IoCmd) -> Result<(), IoError> {
        match self.plan.check(cmd) {
            None => {
                // SAFETY: forwarded from our caller.
                unsafe { self.inner.submit(cmd) }
            }
            Some(fault) => {
                cmd.validate(&self.geometry)?;
                if self.done.is_full() || self.in_flight() >= self.depth() {
                    return Err(IoError::QueueFull);
                }
                let result = match fault {
                    Fault::Errno(errno) => Err(IoError::Device { errno }),
                    Fault::Short(got) => Err(IoError::Short {
                        expected: cmd.bytes(&self.geometry) as u32,
                        got,
                    }),
                };
                self.done.push(Completion {
                    tag: cmd.tag,
                    result,
                });
                Ok(())
            }
        }
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        let n = self.done.drain_into(out);
        n + self.inner.poll(&mut out[n..])
    }

    fn in_flight(&self) -> u32 {
        self.inner.in_flight() + self.done.len()
    }

    fn depth(&self) -> u32 {
        self.inner.depth()
    }

    fn wakes_on_completion(&self) -> bool {
        self.inner.wakes_on_completion()
    }

    unsafe fn register_memory(&mut self, region: &DmaRegion) -> Result<()> {
        // SAFETY: forwarded from our caller.
        unsafe { self.inner.register_memory(region) }
    }
}
