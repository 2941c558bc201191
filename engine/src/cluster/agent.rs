//! A node's cluster agent for `flint serve`: the [`Member`] and the
//! [`Coordinator`] stepped on a thread against etcd, woken by a watch on
//! the cluster's prefix (so a lost node or a release is acted on at once)
//! and at least every `tick`; the fence and the map published for the
//! data path and the management API.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::coord::{Coordinator, Step};
use super::etcd::Etcd;
use super::keys::Keys;
use super::kv::KvError;
use super::map::{ClusterMap, NodeRecord};
use super::member::{now_ms, Fence, Member};
use super::ClusterConfig;

/// What the agent publishes.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// The fence the data path checks.
    pub fence: Arc<Fence>,
    map: Mutex<Option<Arc<ClusterMap>>>,
    leader: AtomicBool,
    maps_written: AtomicU64,
    etcd_errors: AtomicU64,
    last_error: Mutex<String>,
    lease: AtomicU64,
    /// Shards still open on this node (the bucket host sets them).
    pub holding: Mutex<std::collections::BTreeSet<u32>>,
    /// The health of the buckets open on this node (the host sets it).
    pub buckets: Mutex<std::collections::BTreeMap<u32, super::rebuild::BucketHealth>>,
}

impl ClusterView {
    /// The map the node last read.
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.lock().ok().and_then(|m| m.clone())
    }

    /// The fence, for the data server to hold.
    pub fn fence_handle(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// The node's lease (0: none now).
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire) as i64
    }

    /// Whether this node is the coordinator.
    pub fn is_coordinator(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Figures for `/metrics` and `/v1/cluster`.
    pub fn status(&self, node: u32) -> Value {
        let map = self.map();
        json!({
            "node": node,
            "epoch": map.as_ref().map_or(0, |m| m.epoch),
            "coordinator": self.is_coordinator(),
            "fence_open_ms": self.fence.open_for_ms(),
            "fenced_requests": self.fence.refused(),
            "maps_written": self.maps_written.load(Ordering::Relaxed),
            "etcd_errors": self.etcd_errors.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            "shards": map.as_ref().map_or(0, |m| m.owned(node).count()),
            "buckets": self.buckets.lock().map(|b| json!(*b)).unwrap_or_default(),
        })
    }
}

/// The running agent.
pub struct Agent {
    view: Arc<ClusterView>,
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    watch_socket: Arc<Mutex<Option<std::net::TcpStream>>>,
    node: u32,
}

/// Why the agent could not start.
#[derive(Debug)]
pub struct AgentError(pub String);

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgentError {}

impl Agent {
    /// Joins cluster `cfg` as `record`: registers under a lease (waiting
    /// at most one lease TTL for etcd to answer), then keeps the lease, the
    /// map and the coordinator role on a thread.
    pub fn start(cfg: &ClusterConfig, record: NodeRecord) -> Result<Agent, AgentError> {
        let ttl_s = i64::from(cfg.lease_ttl);
        let tick = Duration::from_millis((ttl_s as u64 * 1000 / 6).clamp(50, 200));
        let keys = Keys::new(&cfg.name);
        let mut etcd = Etcd::new(&cfg.etcd, Duration::from_millis(ttl_s as u64 * 1000 / 3));
        let mut member = Member::new(keys.clone(), record.clone(), ttl_s);
        let deadline = now_ms() + ttl_s as u64 * 1000;
        loop {
            match member.tick(&mut etcd, now_ms()) {
                Ok(()) => break,
                Err(e) if now_ms() >= deadline => {
                    return Err(AgentError(format!(
                        "cluster {}: cannot register node {} with etcd at {}: {e}",
                        cfg.name,
                        record.id,
                        cfg.etcd.join(",")
                    )))
                }
                Err(_) => std::thread::sleep(tick),
            }
        }
        let view = Arc::new(ClusterView::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel();
        let watch_socket = Arc::new(Mutex::new(None));
        let watcher = {
            let (etcd, root, stop, wake, sock) = (
                etcd.clone(),
                keys.root(),
                stop.clone(),
                wake.clone(),
                watch_socket.clone(),
            );
            std::thread::Builder::new()
                .name("flint-cluster-watch".into())
                .spawn(move || watch(etcd, &root, &stop, &wake, &sock, tick))
                .map_err(|e| AgentError(format!("cannot start the cluster watch: {e}")))?
        };
        let thread = {
            let (view, stop) = (view.clone(), stop.clone());
            let coord = Coordinator::new(keys, record.id);
            std::thread::Builder::new()
                .name("flint-cluster".into())
                .spawn(move || run(etcd, member, coord, &view, &stop, &woken, tick))
                .map_err(|e| AgentError(format!("cannot start the cluster agent: {e}")))?
        };
        tracing::info!(
            "cluster {}: node {} registered (lease {} s)",
            cfg.name,
            record.id,
            ttl_s
        );
        Ok(Agent {
            view,
            stop,
            wake,
            thread: Some(thread),
            watcher: Some(watcher),
            watch_socket,
            node: record.id,
        })
    }

    /// What the agent publishes.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.clone()
    }

    /// This node's id.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Leaves the cluster: revokes the lease (the node's shards fail over
    /// at once) and stops the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(());
        if let Ok(Some(s)) = self.watch_socket.lock().map(|mut s| s.take()) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn note_error(view: &ClusterView, e: &KvError) {
    view.etcd_errors.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = view.last_error.lock() {
        if *last != e.to_string() {
            tracing::warn!("cluster: {e}");
            *last = e.to_string();
        }
    }
}

fn run(
    mut etcd: Etcd,
    mut member: Member,
    mut coord: Coordinator,
    view: &ClusterView,
    stop: &AtomicBool,
    woken: &mpsc::Receiver<()>,
    tick: Duration,
) {
    while !stop.load(Ordering::Acquire) {
        if let Ok(h) = view.holding.lock() {
            member.set_holding(h.clone());
        }
        match member.tick(&mut etcd, now_ms()) {
            Ok(()) => {}
            Err(KvError::LeaseGone) => {
                coord.demote();
                tracing::warn!(
                    "cluster: node {}'s lease expired; not serving until registered again",
                    member.id()
                );
            }
            Err(e) => note_error(view, &e),
        }
        if let Some(lease) = member.lease() {
            match coord.tick(&mut etcd, lease) {
                Ok(Step::Wrote(m)) => {
                    view.maps_written.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "cluster: map epoch {} ({} nodes, {} shards)",
                        m.epoch,
                        m.nodes.len(),
                        m.shards.len()
                    );
                }
                Ok(_) => {}
                Err(e) => note_error(view, &e),
            }
        }
        view.leader.store(coord.is_leader(), Ordering::Relaxed);
        view.lease
            .store(member.lease().unwrap_or(0) as u64, Ordering::Release);
        let epoch = member.map().map_or(0, |m| m.epoch);
        view.fence.set(member.deadline(), epoch);
        if let Ok(mut m) = view.map.lock() {
            if m.as_ref().map(|x| x.epoch) != member.map().map(|x| x.epoch) {
                *m = member.map().cloned().map(Arc::new);
            }
        }
        // Wake on a watch event or at the next tick; drain extra wakes.
        let _ = woken.recv_timeout(tick);
        while woken.try_recv().is_ok() {}
    }
    view.fence.set(0, 0);
    if let Err(e) = member.leave(&mut etcd) {
        tracing::warn!("cluster: could not revoke the lease on the way out: {e}");
    }
}

fn watch(
    mut etcd: Etcd,
    root: &[u8],
    stop: &AtomicBool,
    wake: &mpsc::Sender<()>,
    socket: &Mutex<Option<std::net::TcpStream>>,
    retry: Duration,
) {
    while !stop.load(Ordering::Acquire) {
        let mut w = match etcd.watch(root, true, 0) {
            Ok(w) => w,
            Err(_) => {
                std::thread::sleep(retry);
                continue;
            }
        };
        if let (Ok(mut s), Ok(stopper)) = (socket.lock(), w.stopper()) {
            *s = Some(stopper);
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        while let Ok(events) = w.events() {
            if !events.is_empty() && wake.send(()).is_err() {
                return;
            }
        }
    }
}
