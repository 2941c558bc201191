//! Reactors: one pinned, polled thread per core, owning its state outright.
//!
//! A [`ReactorSet`] starts one reactor per configured core. Each runs a loop
//! over its inbox of tasks (closures sent from any thread or core), its
//! [`Poller`]s and its timers, never blocking on any of them. In `busy` mode
//! the loop never sleeps (appliance setting); in `adaptive` mode a reactor
//! that has been idle for `spin_us` parks on its eventfd until a task, a ring
//! message, an io_uring completion or its next timer wakes it (dev, tests,
//! and these 2-core machines).
//!
//! Work that belongs to another core is a message: [`Core::send`] and
//! [`Core::call`] between reactors, [`ReactorSet::run_on`] from outside, and
//! typed data-path channels from [`crate::mesh`]. Stopping asks every poller
//! to stop issuing work and keeps polling until nothing is in flight.

use serde::Deserialize;
use std::any::Any;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock;
use crate::corering::CoreRing;
use crate::error::{Error, Result};
use crate::park::{Parker, Waker};
use crate::placement;
use crate::poller::{PollStatus, Poller};
use crate::queue::Queue;
use crate::stats::{CoreStats, CoreStatsSnapshot};
use crate::timer::{self, TimerId, Timers};

/// A unit of work sent to a reactor.
pub type Task = Box<dyn FnOnce(&mut Core) + Send>;

/// How a reactor waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Never sleep: lowest latency, one core burned per reactor (appliance).
    Busy,
    /// Spin for `spin_us`, then park until woken (dev, tests, small machines).
    #[default]
    Adaptive,
}

/// Reactor settings (the `[reactor]` table of a config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorConfig {
    /// CPUs to run reactors on; empty means every CPU this process may use.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// `busy` or `adaptive`.
    #[serde(default)]
    pub poll_mode: PollMode,
    /// Adaptive mode: microseconds of idle spinning before parking.
    #[serde(default = "default_spin_us")]
    pub spin_us: u64,
    /// Pin each reactor thread to its CPU.
    #[serde(default = "default_true")]
    pub pin: bool,
    /// Tasks each reactor's inbox holds before senders see back-pressure.
    #[serde(default = "default_inbox")]
    pub inbox_capacity: usize,
    /// Milliseconds a stopping reactor waits for in-flight work to finish.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
}

fn default_spin_us() -> u64 {
    // Measured with flint-bench on io_uring: parking at once costs no IOPS
    // and the least CPU per I/O; spinning longer trades CPU for latency.
    0
}
fn default_true() -> bool {
    true
}
fn default_inbox() -> usize {
    4096
}
fn default_drain_ms() -> u64 {
    5000
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            cores: Vec::new(),
            poll_mode: PollMode::Adaptive,
            spin_us: default_spin_us(),
            pin: true,
            inbox_capacity: default_inbox(),
            drain_timeout_ms: default_drain_ms(),
        }
    }
}

impl ReactorConfig {
    /// Checks the settings against this machine and resolves `cores`.
    pub fn resolve_cores(&self) -> Result<Vec<usize>> {
        let allowed = placement::allowed_cores()?;
        if self.cores.is_empty() {
            return Ok(allowed);
        }
        let mut seen = Vec::new();
        for &c in &self.cores {
            if !allowed.contains(&c) {
                return Err(Error::Config {
                    key: "reactor.cores".into(),
                    reason: format!(
                        "CPU {c} is not available to this process; choose from {allowed:?}"
                    ),
                });
            }
            if seen.contains(&c) {
                return Err(Error::Config {
                    key: "reactor.cores".into(),
                    reason: format!("CPU {c} is listed twice; one reactor per CPU"),
                });
            }
            seen.push(c);
        }
        if self.inbox_capacity < 2 {
            return Err(Error::Config {
                key: "reactor.inbox_capacity".into(),
                reason: "must be at least 2".into(),
            });
        }
        Ok(seen)
    }
}

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;
const STOPPED: u8 = 3;
const FAILED: u8 = 4;

/// The parts of a reactor other threads may touch.
struct Remote {
    cpu: usize,
    inbox: Queue<Task>,
    waker: Waker,
    stats: CoreStats,
    state: AtomicU8,
}

impl Remote {
    fn push(&self, index: usize, task: Task) -> Result<()> {
        if self.state.load(Ordering::Acquire) > STOPPING {
            return Err(Error::Stopped { core: index });
        }
        self.inbox
            .push(task)
            .map_err(|_| Error::Busy { core: index })?;
        self.waker.wake();
        Ok(())
    }
}

/// A reactor's own state, handed to its tasks, pollers and timers.
pub struct Core {
    index: usize,
    remote: Arc<Remote>,
    peers: Arc<[Arc<Remote>]>,
    pollers: Vec<Box<dyn Poller>>,
    timers: Timers,
    parker: Parker,
    mode: PollMode,
    spin_ticks: u64,
    drain_ticks: u64,
    locals: Vec<Box<dyn Any>>,
    outbox: Vec<(usize, Task)>,
    ring: Option<Rc<RefCell<CoreRing>>>,
    stopping: bool,
}

impl Core {
    /// This reactor's index (0-based, in the order of the configured cores).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The CPU this reactor runs on.
    pub fn cpu(&self) -> usize {
        self.remote.cpu
    }

    /// How many reactors the set has.
    pub fn reactors(&self) -> usize {
        self.peers.len()
    }

    /// This reactor's counters.
    pub fn stats(&self) -> &CoreStats {
        &self.remote.stats
    }

    /// The eventfd that wakes this reactor; register it with I/O rings so
    /// their completions end a park.
    pub fn wake_fd(&self) -> RawFd {
        self.parker.fd()
    }

    /// This reactor's io_uring, created on first use. Devices driven through
    /// io_uring share it, and the reactor parks inside it.
    pub fn core_ring(&mut self) -> Result<Rc<RefCell<CoreRing>>> {
        if let Some(r) = &self.ring {
            return Ok(r.clone());
        }
        let r = Rc::new(RefCell::new(CoreRing::new(self.parker.fd())?));
        self.ring = Some(r.clone());
        Ok(r)
    }

    /// A waker for this reactor, for whoever hands it work.
    pub fn waker(&self) -> Waker {
        self.remote.waker.clone()
    }

    /// Whether the reactor has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Adds a poller, polled from the next loop iteration on.
    pub fn add_poller(&mut self, poller: impl Poller + 'static) {
        self.pollers.push(Box::new(poller));
    }

    /// Runs `f` once after `delay`.
    pub fn add_timer(&mut self, delay: Duration, f: impl FnMut(&mut Core) + 'static) -> TimerId {
        self.timers.add(delay, None, Box::new(f))
    }

    /// Runs `f` every `period`.
    pub fn add_periodic(
        &mut self,
        period: Duration,
        f: impl FnMut(&mut Core) + 'static,
    ) -> TimerId {
        self.timers.add(period, Some(period), Box::new(f))
    }

    /// Cancels a timer.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    pub(crate) fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    /// This reactor's value of type `T`, if one was stored.
    pub fn local<T: 'static>(&mut self) -> Option<&mut T> {
        self.locals.iter_mut().find_map(|b| b.downcast_mut::<T>())
    }

    /// Stores a per-reactor value of type `T`, replacing any previous one.
    pub fn set_local<T: 'static>(&mut self, value: T) {
        match self.local::<T>() {
            Some(slot) => *slot = value,
            None => self.locals.push(Box::new(value)),
        }
    }

    /// Sends a task to reactor `to` (which may be this one). A full inbox is
    /// [`Error::Busy`]: back-pressure for the caller to handle.
    pub fn send(&self, to: usize, task: impl FnOnce(&mut Core) + Send + 'static) -> Result<()> {
        let peer = self.peers.get(to).ok_or_else(|| Error::NoSuchCore {
            core: to,
            cores: (0..self.peers.len()).collect(),
        })?;
        peer.push(to, Box::new(task))
    }

    /// Runs `f` on reactor `to` and then `reply` with its result back on this
    /// reactor. The reply is retried until the inbox takes it, so results are
    /// never lost to back-pressure.
    pub fn call<R: Send + 'static>(
        &self,
        to: usize,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
        reply: impl FnOnce(&mut Core, R) + Send + 'static,
    ) -> Result<()> {
        let from = self.index;
        self.send(to, move |core: &mut Core| {
            let r = f(core);
            core.send_or_queue(from, Box::new(move |c: &mut Core| reply(c, r)));
        })
    }

    fn send_or_queue(&mut self, to: usize, task: Task) {
        if self.outbox.is_empty() {
            if let Some(peer) = self.peers.get(to) {
                match peer.inbox.push(task) {
                    Ok(()) => peer.waker.wake(),
                    Err(task) => self.outbox.push((to, task)),
                }
            }
        } else {
            self.outbox.push((to, task));
        }
    }

    fn flush_outbox(&mut self) -> bool {
        let mut moved = false;
        while let Some((to, task)) = self.outbox.pop() {
            let peer = &self.peers[to];
            if peer.state.load(Ordering::Acquire) > STOPPING {
                continue;
            }
            match peer.inbox.push(task) {
                Ok(()) => {
                    peer.waker.wake();
                    moved = true;
                }
                Err(task) => {
                    self.outbox.push((to, task));
                    break;
                }
            }
        }
        moved
    }

    fn run_tasks(&mut self) -> bool {
        let mut n = 0;
        while n < 64 {
            match self.remote.inbox.pop() {
                Some(task) => {
                    // Counted before it runs: a task may answer its caller,
                    // who must then see it counted.
                    self.remote.stats.add_messages(1);
                    task(self);
                    n += 1;
                }
                None => break,
            }
        }
        n > 0
    }

    fn run_pollers(&mut self) -> bool {
        let mut pollers = std::mem::take(&mut self.pollers);
        let mut busy = false;
        pollers.retain_mut(|p| match p.poll(self) {
            PollStatus::Busy => {
                busy = true;
                true
            }
            PollStatus::Idle => true,
            PollStatus::Done => false,
        });
        // Pollers added while polling landed in the fresh vector.
        pollers.append(&mut self.pollers);
        self.pollers = pollers;
        busy
    }

    fn iteration(&mut self) -> bool {
        let mut busy = self.run_tasks();
        busy |= self.run_pollers();
        if !self.timers.is_empty() {
            busy |= timer::run_due(self, clock::ticks());
        }
        if !self.outbox.is_empty() {
            busy |= self.flush_outbox();
        }
        if let Some(r) = &self.ring {
            // One doorbell per iteration for every device on this core.
            r.borrow_mut().submit();
        }
        busy
    }

    fn in_flight(&self) -> usize {
        self.pollers.iter().map(|p| p.in_flight()).sum()
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        let mut pollers = std::mem::take(&mut self.pollers);
        for p in &mut pollers {
            p.stop(self);
        }
        pollers.append(&mut self.pollers);
        self.pollers = pollers;
    }

    fn park(&mut self, now: u64) {
        self.parker.prepare();
        if self.iteration() {
            self.parker.cancel();
            return;
        }
        let mut timeout = self
            .timers
            .next_deadline()
            .map(|d| Duration::from_nanos(clock::ticks_to_ns(d.saturating_sub(now))));
        if self.stopping || !self.outbox.is_empty() {
            timeout = Some(timeout.map_or(Duration::from_millis(1), |t| {
                t.min(Duration::from_millis(1))
            }));
        }
        self.remote.stats.parked();
        match &self.ring {
            Some(r) => {
                if r.borrow_mut().wait(timeout) {
                    self.parker.drain();
                }
                self.parker.cancel();
            }
            None => self.parker.park(timeout),
        }
    }

    fn run(&mut self) {
        self.remote.stats.started();
        let mut idle_since: Option<u64> = None;
        let mut stop_at = 0u64;
        loop {
            let t0 = clock::ticks();
            let busy = self.iteration();
            let t1 = clock::ticks();
            self.remote.stats.poll(busy, t1 - t0);

            if !self.stopping && self.remote.state.load(Ordering::Acquire) == STOPPING {
                self.begin_stop();
                stop_at = t1 + self.drain_ticks;
            }
            if self.stopping {
                let left = self.in_flight();
                if left == 0 && self.remote.inbox.is_empty() {
                    break;
                }
                if t1 > stop_at {
                    tracing::warn!(
                        core = self.cpu(),
                        in_flight = left,
                        "reactor stopped before in-flight work finished (drain timeout)"
                    );
                    break;
                }
            }
            if busy {
                idle_since = None;
                continue;
            }
            match self.mode {
                PollMode::Busy => std::hint::spin_loop(),
                PollMode::Adaptive => {
                    let since = *idle_since.get_or_insert(t1);
                    if t1 - since >= self.spin_ticks {
                        self.park(t1);
                        idle_since = None;
                    }
                }
            }
        }
    }
}

/// A handle to a task's result.
pub struct Pending<R> {
    rx: mpsc::Receiver<R>,
    core: usize,
}

impl<R> Pending<R> {
    /// Blocks until the task has run and returns its result.
    pub fn wait(self) -> Result<R> {
        self.rx
            .recv()
            .map_err(|_| Error::Stopped { core: self.core })
    }

    /// Blocks up to `timeout`; `Ok(None)` if the task has not run yet.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<R>> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Stopped { core: self.core }),
        }
    }
}

/// How a reactor ended.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// The CPU.
    pub core: usize,
    /// False if the reactor panicked (the panic is logged).
    pub clean: bool,
}

use serde::Serialize;

/// The running reactors.
pub struct ReactorSet {
    remotes: Arc<[Arc<Remote>]>,
    threads: Vec<Option<JoinHandle<()>>>,
}

impl ReactorSet {
    /// Starts one reactor per configured core.
    pub fn start(config: &ReactorConfig) -> Result<Self> {
        let cpus = config.resolve_cores()?;
        let mut parkers = Vec::with_capacity(cpus.len());
        let mut remotes = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            let parker = Parker::new()?;
            remotes.push(Arc::new(Remote {
                cpu,
                inbox: Queue::new(config.inbox_capacity),
                waker: parker.waker(),
                stats: CoreStats::default(),
                state: AtomicU8::new(STARTING),
            }));
            parkers.push(parker);
        }
        let remotes: Arc<[Arc<Remote>]> = remotes.into();
        // Calibrate the clock before reactors read it.
        let _ = clock::ticks_per_sec();
        let mut threads = Vec::with_capacity(cpus.len());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        for (index, parker) in parkers.into_iter().enumerate() {
            let remotes2 = remotes.clone();
            let ready = ready_tx.clone();
            let cfg = config.clone();
            let cpu = cpus[index];
            let spawned = std::thread::Builder::new()
                .name(format!("flint-r{cpu}"))
                .spawn(move || reactor_thread(index, cpu, cfg, parker, remotes2, ready))
                .map_err(|source| Error::Os {
                    op: "spawn reactor thread",
                    source,
                })?;
            threads.push(Some(spawned));
        }
        drop(ready_tx);
        let set = ReactorSet { remotes, threads };
        for _ in 0..cpus.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    set.request_stop();
                    return Err(e);
                }
                Err(_) => {
                    return Err(Error::Os {
                        op: "start reactor",
                        source: std::io::Error::other("reactor thread exited during start"),
                    })
                }
            }
        }
        tracing::info!(cores = ?cpus, mode = ?config.poll_mode, "reactors started");
        Ok(set)
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.remotes.len()
    }

    /// Always false: a set has at least one reactor.
    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// The CPUs, by reactor index.
    pub fn cpus(&self) -> Vec<usize> {
        self.remotes.iter().map(|r| r.cpu).collect()
    }

    /// Wakers of every reactor, by index (to build [`crate::mesh`] channels).
    pub fn wakers(&self) -> Vec<Waker> {
        self.remotes.iter().map(|r| r.waker.clone()).collect()
    }

    fn remote(&self, index: usize) -> Result<&Arc<Remote>> {
        self.remotes.get(index).ok_or_else(|| Error::NoSuchCore {
            core: index,
            cores: (0..self.remotes.len()).collect(),
        })
    }

    /// Sends a task to reactor `index`, without waiting for it.
    pub fn send(&self, index: usize, task: impl FnOnce(&mut Core) + Send + 'static) -> Result<()> {
        self.remote(index)?.push(index, Box::new(task))
    }

    /// Runs `f` on reactor `index`; the result comes back through [`Pending`].
    pub fn run_on<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<Pending<R>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(index, move |core| {
            let _ = tx.send(f(core));
        })?;
        Ok(Pending { rx, core: index })
    }

    /// Runs `f` on reactor `index` and waits for its result.
    pub fn call<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R> {
        self.run_on(index, f)?.wait()
    }

    /// Counters of every reactor, readable while they run.
    pub fn stats(&self) -> Vec<CoreStatsSnapshot> {
        self.remotes
            .iter()
            .map(|r| r.stats.snapshot(r.cpu))
            .collect()
    }

    fn request_stop(&self) {
        for r in self.remotes.iter() {
            let _ =
                r.state
                    .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire);
            let _ =
                r.state
                    .compare_exchange(STARTING, STOPPING, Ordering::AcqRel, Ordering::Acquire);
            r.waker.force();
        }
    }

    /// Stops every reactor: pollers stop issuing work, in-flight work drains
    /// (up to the drain timeout), then the threads exit.
    pub fn shutdown(mut self) -> Vec<StopReport> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Vec<StopReport> {
        self.request_stop();
        let mut reports = Vec::new();
        for (i, t) in self.threads.iter_mut().enumerate() {
            if let Some(t) = t.take() {
                let _ = t.join();
                reports.push(StopReport {
                    core: self.remotes[i].cpu,
                    clean: self.remotes[i].state.load(Ordering::Acquire) == STOPPED,
                });
            }
        }
        reports
    }
}

impl Drop for ReactorSet {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn reactor_thread(
    index: usize,
    cpu: usize,
    cfg: ReactorConfig,
    parker: Parker,
    peers: Arc<[Arc<Remote>]>,
    ready: mpsc::Sender<Result<()>>,
) {
    if cfg.pin {
        if let Err(e) = placement::pin_current_thread(cpu) {
            peers[index].state.store(FAILED, Ordering::Release);
            let _ = ready.send(Err(e));
            return;
        }
    }
    let remote = peers[index].clone();
    let mut core = Core {
        index,
        remote: remote.clone(),
        peers,
        pollers: Vec::new(),
        timers: Timers::default(),
        parker,
        mode: cfg.poll_mode,
        spin_ticks: clock::duration_to_ticks(Duration::from_micros(cfg.spin_us)),
        drain_ticks: clock::duration_to_ticks(Duration::from_millis(cfg.drain_timeout_ms)),
        locals: Vec::new(),
        outbox: Vec::new(),
        ring: None,
        stopping: false,
    };
    let _ = remote
        .state
        .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    let _ = ready.send(Ok(()));
    drop(ready);
    let result = catch_unwind(AssertUnwindSafe(|| core.run()));
    match result {
        Ok(()) => {
            // Drop pollers (closing queue pairs) before declaring the stop.
            drop(core);
            remote.state.store(STOPPED, Ordering::Release);
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(core = cpu, panic = %msg, "reactor failed");
            remote.state.store(FAILED, Ordering::Release);
        }
    }
    // Tasks still queued are dropped, so their Pending handles see Stopped.
    while remote.inbox.pop().is_some() {}
}
