//! The data protocol's server: sessions authenticated per organization,
//! requests reassembled from their packets, executed on the engine by a
//! pool of workers, and answered; responses are kept until the client
//! acknowledges them, so a retransmitted request gets the same answer
//! without running twice.
//!
//! Frames come in on reactors polling their queues (`start_polled`: NIC
//! queue pairs, or a kernel UDP socket the reactor sleeps on), or on one
//! receive thread (`start`, for a port no reactor polls). Every session
//! belongs to one core (its lane, named in its id) and its frames are
//! handled there. Reads within a range run from reactor to reactor; other
//! requests go to workers, which wait on the engine and send the responses.
//! Every frame that fails a check — malformed, from an unknown or expired
//! session, replayed, over the session's credits, from the wrong address —
//! is dropped and counted, never trusted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flint_dataplane::nic::{Port, MAX_FRAME};
use hdrhistogram::Histogram;

use super::auth::{self, Key};
use super::wire::{self, hello, Envelope, FileStat, FrameError, Header, Kind, Partial, Request};
use crate::codec::Writer;
use crate::engine::root_ctx;
use crate::engine::Engine;
use crate::meta::namespace::{RenameFlags, XattrMode};
use crate::meta::{FsId, Ino, OrgId};
use crate::store::StoreError;

mod ns;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests a session may have in flight.
    pub credits: u16,
    /// Largest frame sent or received.
    pub max_frame: usize,
    /// A session idle this long expires.
    pub idle: Duration,
    /// Threads running requests.
    pub workers: usize,
    /// In a cluster, the node's fence: while it is closed (the node may
    /// have lost its lease) no request starts and no answer leaves; the
    /// clients' retransmissions find them once it opens again.
    pub fence: Option<Arc<crate::cluster::member::Fence>>,
    /// In a cluster, the slices this node keeps for its peers (served to
    /// sessions of their organization only).
    pub slices: Option<Arc<crate::cluster::slices::Slices>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            credits: 64,
            max_frame: wire::DEFAULT_FRAME,
            idle: Duration::from_secs(60),
            workers: 16,
            fence: None,
            slices: None,
        }
    }
}

/// What the server counted (all monotonic).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Requests run.
    pub requests: AtomicU64,
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Frames dropped as malformed (bad magic, length, checksum...).
    pub malformed: AtomicU64,
    /// Frames of another protocol version.
    pub bad_version: AtomicU64,
    /// Handshakes whose proof was wrong (a wrong key or organization).
    pub auth_failures: AtomicU64,
    /// Frames for a session that does not exist or expired.
    pub unknown_session: AtomicU64,
    /// Frames for a session from another address than the one that opened
    /// it.
    pub wrong_peer: AtomicU64,
    /// Requests already answered and acknowledged (replays).
    pub replayed: AtomicU64,
    /// Requests past the session's credits.
    pub over_credits: AtomicU64,
    /// Requests whose message does not parse.
    pub bad_request: AtomicU64,
    /// Requests for another organization's files or file systems.
    pub cross_org: AtomicU64,
    /// Responses sent again for a retransmitted request.
    pub resent: AtomicU64,
    /// Frames that arrived on another core's queue and were handed to the
    /// core owning their session (in software).
    pub handed_off: AtomicU64,
    /// Hand-offs dropped: the owning core's inbox was full (the client
    /// retransmits).
    pub handoff_dropped: AtomicU64,
}

impl Counters {
    /// (name, value) of every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("frames_in", g(&self.frames_in)),
            ("frames_out", g(&self.frames_out)),
            ("requests", g(&self.requests)),
            ("sessions", g(&self.sessions)),
            ("malformed", g(&self.malformed)),
            ("bad_version", g(&self.bad_version)),
            ("auth_failures", g(&self.auth_failures)),
            ("unknown_session", g(&self.unknown_session)),
            ("wrong_peer", g(&self.wrong_peer)),
            ("replayed", g(&self.replayed)),
            ("over_credits", g(&self.over_credits)),
            ("bad_request", g(&self.bad_request)),
            ("cross_org", g(&self.cross_org)),
            ("resent", g(&self.resent)),
            ("handed_off", g(&self.handed_off)),
            ("handoff_dropped", g(&self.handoff_dropped)),
        ]
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Per-operation figures: count, bytes, latency.
#[derive(Debug, Clone)]
pub struct OpStat {
    /// Operations.
    pub count: u64,
    /// Bytes read or written.
    pub bytes: u64,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
}

/// Per-operation statistics of the server.
#[derive(Debug, Default)]
pub struct OpStats(Mutex<BTreeMap<&'static str, OpStat>>);

impl OpStats {
    fn record(&self, op: &'static str, bytes: u64, us: u64) {
        let Ok(mut m) = self.0.lock() else { return };
        let s = m.entry(op).or_insert_with(|| OpStat {
            count: 0,
            bytes: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        });
        s.count += 1;
        s.bytes += bytes;
        let _ = s.latency.record(us.max(1));
    }

    /// A copy of every operation's figures.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStat> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What a session may touch: its organization's file systems, and the
/// files it opened or was allowed before.
struct Ctx {
    org: OrgId,
    files: Mutex<HashSet<Ino>>,
}

struct Session {
    peer: SocketAddr,
    org: Option<(OrgId, Key)>,
    org_name: String,
    client_nonce: [u8; 16],
    server_nonce: [u8; 16],
    open: bool,
    last: Instant,
    max_frame: usize,
    ctx: Arc<Ctx>,
    /// Requests being reassembled.
    partial: HashMap<u64, Partial>,
    /// Requests running.
    busy: HashSet<u64>,
    /// Responses not yet acknowledged (status, body), with the times each
    /// was sent.
    done: BTreeMap<u64, (i32, Arc<Vec<u8>>, usize)>,
    /// Every request below this one is acknowledged.
    floor: u64,
}

/// A client's address and the port (queue) its frames came in on, which
/// its answers leave by.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    via: Arc<dyn Port>,
}

struct Job {
    session: u64,
    request: u64,
    peer: Peer,
    frame: usize,
    msg: Vec<u8>,
    ctx: Arc<Ctx>,
}

struct Shared {
    engine: Arc<Engine>,
    cfg: ServerConfig,
    /// Polling reactors still holding their queue (polled mode).
    pollers_live: std::sync::atomic::AtomicUsize,
    /// Sessions by owning core (lane): a session's id names its lane in
    /// its low byte, and only that core handles its frames (in polled
    /// mode), so no two cores contend for one session's state.
    lanes: Vec<Mutex<HashMap<u64, Session>>>,
    /// Every reactor polls a queue of its own (RSS keeps a flow on one
    /// queue): a session is owned by the core its Hello arrived on. Else
    /// sessions are spread over all cores and frames handed to their
    /// owners in software.
    queue_per_core: bool,
    /// The next lane a session is given when spread.
    next_lane: AtomicU64,
    counters: Counters,
    stats: OpStats,
    stop: AtomicBool,
    /// The organization allowed to use the slices, once looked up.
    slice_org: std::sync::OnceLock<crate::meta::OrgId>,
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    /// Reactors polling queues for it (polled mode).
    pollers: Vec<usize>,
}

/// The server's figures, shared with whoever reports them.
#[derive(Clone)]
pub struct ServerView(Arc<Shared>);

impl ServerView {
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// Per-operation statistics.
    pub fn stats(&self) -> &OpStats {
        &self.0.stats
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.0
            .lanes
            .iter()
            .map(|l| {
                l.lock()
                    .map(|m| m.values().filter(|s| s.open).count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// How long a reactor polling a NIC queue keeps polling after its last
/// frame before it may park.
const SPIN_AFTER_TRAFFIC: Duration = Duration::from_micros(500);

/// Sessions still being opened, at most (older ones are forgotten).
const MAX_PENDING: usize = 4096;

impl Server {
    /// Starts serving `engine` on `port`.
    pub fn start(
        engine: Arc<Engine>,
        port: Arc<dyn Port>,
        cfg: ServerConfig,
    ) -> std::io::Result<Server> {
        let addr = port.local_addr()?;
        let shared = Self::shared(engine, cfg, false);
        let (tx, mut threads) = spawn_workers(&shared)?;
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("flint-rx".into())
                .spawn(move || receive(&s, &port, tx))?,
        );
        Ok(Server {
            shared,
            threads,
            addr,
            pollers: Vec::new(),
        })
    }

    /// Starts serving `engine` on NIC queues polled by the reactors: queue
    /// `ports[i].1` by reactor `ports[i].0`, in bursts, from the reactor's
    /// loop (DPDK style; an adaptive reactor is woken every 100 us to poll).
    /// Frames are handled where they arrive: reads within a range continue
    /// from reactor to reactor by themselves, other requests and session
    /// openings go to worker threads.
    pub fn start_polled(
        engine: Arc<Engine>,
        ports: Vec<(usize, Arc<dyn Port>)>,
        cfg: ServerConfig,
    ) -> std::io::Result<Server> {
        let first = ports.first().map(|p| p.1.clone()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no queues to poll")
        })?;
        let addr = first.local_addr()?;
        let polled: HashSet<usize> = ports.iter().map(|p| p.0).collect();
        let queue_per_core = polled.len() >= engine.reactor_count();
        let shared = Self::shared(engine, cfg, queue_per_core);
        let (tx, threads) = spawn_workers(&shared)?;
        for (i, (reactor, port)) in ports.into_iter().enumerate() {
            let (s, jobs) = (shared.clone(), tx.clone());
            // Dropped with the poller when the server stops, so the queue
            // (a socket) is closed by the time `stop` returns.
            shared.pollers_live.fetch_add(1, Ordering::AcqRel);
            let held = Held {
                port: Some(port.clone()),
                jobs: Some(jobs),
                s: s.clone(),
            };
            let mut last_sweep = Instant::now();
            let mut last_frame = Instant::now();
            shared
                .engine
                .reactor_poller(
                    reactor,
                    Duration::from_micros(100),
                    port.readable_fd(),
                    move || {
                        if s.stop.load(Ordering::Acquire) {
                            return None;
                        }
                        let (Some(port), Some(jobs)) = (&held.port, &held.jobs) else {
                            return None;
                        };
                        if i == 0 && last_sweep.elapsed() > Duration::from_secs(1) {
                            sweep(&s);
                            last_sweep = Instant::now();
                        }
                        // A burst of frames, each handled where it lies in the
                        // NIC's buffer (no copy out of it).
                        let n = port
                            .recv_burst(32, &mut |frame, from| {
                                let peer = Peer {
                                    addr: from,
                                    via: port.clone(),
                                };
                                handle_frame(&s, frame, &peer, jobs, Some(reactor));
                            })
                            .unwrap_or(0);
                        // Keep polling (no parking) for a little while after
                        // traffic: the next request of a session usually follows
                        // its answer within microseconds, and a parked reactor
                        // only looks again at its next timer.
                        if n > 0 {
                            last_frame = Instant::now();
                        }
                        Some(n > 0 || last_frame.elapsed() < SPIN_AFTER_TRAFFIC)
                    },
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(Server {
            shared,
            threads,
            addr,
            pollers: polled.into_iter().collect(),
        })
    }

    fn shared(engine: Arc<Engine>, cfg: ServerConfig, queue_per_core: bool) -> Arc<Shared> {
        // A lane per reactor (at most 256: the id's low byte).
        let lanes = engine.reactor_count().clamp(1, 256);
        Arc::new(Shared {
            engine,
            pollers_live: std::sync::atomic::AtomicUsize::new(0),
            cfg: ServerConfig {
                max_frame: cfg.max_frame.clamp(wire::MIN_FRAME, MAX_FRAME),
                credits: cfg.credits.max(1),
                workers: cfg.workers.max(1),
                ..cfg
            },
            lanes: (0..lanes).map(|_| Mutex::new(HashMap::new())).collect(),
            queue_per_core,
            next_lane: AtomicU64::new(0),
            counters: Counters::default(),
            stats: OpStats::default(),
            stop: AtomicBool::new(false),
            slice_org: std::sync::OnceLock::new(),
        })
    }

    /// The address clients reach it on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Per-operation statistics.
    pub fn stats(&self) -> &OpStats {
        &self.shared.stats
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.view().sessions()
    }

    /// A handle on the server's figures that outlives [`Server::stop`]
    /// (for the management API).
    pub fn view(&self) -> ServerView {
        ServerView(self.shared.clone())
    }

    /// Stops taking frames, finishes the requests already received, and
    /// returns once every worker is done.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        // A polling reactor may sleep until its socket is readable: an
        // empty task wakes it to see the flag and drop its poller.
        for &r in &self.pollers {
            let _ = self.shared.engine.on_reactor(r, || {});
        }
        for t in self.threads {
            let _ = t.join();
        }
        // The pollers drop their queues (and their senders, which lets the
        // workers end) when they next run; wait for that, briefly.
        let t0 = Instant::now();
        while self.shared.pollers_live.load(Ordering::Acquire) > 0
            && t0.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What a polling reactor holds for the server: its queue and its way to
/// the workers. Dropping it (with the poller) is the poller's end.
struct Held {
    port: Option<Arc<dyn Port>>,
    jobs: Option<mpsc::Sender<Work>>,
    s: Arc<Shared>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The queue and the sender first, then the count `stop` waits on.
        drop(self.port.take());
        drop(self.jobs.take());
        self.s.pollers_live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends a handshake message (kept nowhere: small, sent from a copy).
fn send(s: &Shared, kind: Kind, session: u64, request: u64, msg: &[u8], frame: usize, to: &Peer) {
    let env = Envelope {
        kind,
        session,
        request,
        ack: 0,
    };
    send_from(s, &env, &[], &Arc::new(msg.to_vec()), frame, 0, to)
}

/// Sends the message `prefix ++ body` in packets from packet `start` on;
/// the body leaves from where it lies when the port can send it so.
fn send_from(
    s: &Shared,
    env: &Envelope,
    prefix: &[u8],
    body: &Arc<Vec<u8>>,
    frame: usize,
    start: usize,
    to: &Peer,
) {
    wire::gather(env, prefix, body, frame, start, |head, range| {
        if to.via.send_parts(head, body, range, to.addr).is_ok() {
            bump(&s.counters.frames_out);
        }
    });
}

/// Sends a response: its status, then its body from where it lies.
fn respond(
    s: &Shared,
    (session, request): (u64, u64),
    (status, body): (i32, &Arc<Vec<u8>>),
    frame: usize,
    start: usize,
    to: &Peer,
) {
    if s.cfg.fence.as_ref().is_some_and(|f| !f.may_ack()) {
        return;
    }
    let env = Envelope {
        kind: Kind::Response,
        session,
        request,
        ack: 0,
    };
    send_from(s, &env, &status.to_le_bytes(), body, frame, start, to);
}

fn reject(s: &Shared, session: u64, request: u64, code: i32, why: &str, to: &Peer) {
    send(
        s,
        Kind::Reject,
        session,
        request,
        &hello::reject(code, why),
        wire::MIN_FRAME,
        to,
    );
}

/// Starts the worker threads; returns the sender that feeds them (they
/// stop when every clone of it is gone).
fn spawn_workers(
    shared: &Arc<Shared>,
) -> std::io::Result<(mpsc::Sender<Work>, Vec<JoinHandle<()>>)> {
    let (tx, rx) = mpsc::channel::<Work>();
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::new();
    for i in 0..shared.cfg.workers {
        let (s, rx) = (shared.clone(), rx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("flint-worker-{i}"))
                .spawn(move || worker(&s, &rx))?,
        );
    }
    Ok((tx, threads))
}

/// Work for the worker threads.
enum Work {
    /// A complete request.
    Request(Job),
    /// A Hello received by a reactor (opening a session asks shard 0 for
    /// the organization, which a reactor must not wait for), and the lane
    /// the session will belong to.
    Hello(Header, Vec<u8>, Peer, usize),
}

/// The receive loop of the thread mode: frames in, sessions kept,
/// requests handed on.
fn receive(s: &Arc<Shared>, port: &Arc<dyn Port>, jobs: mpsc::Sender<Work>) {
    let mut buf = vec![0u8; MAX_FRAME];
    let mut last_sweep = Instant::now();
    while !s.stop.load(Ordering::Acquire) {
        if last_sweep.elapsed() > Duration::from_secs(1) {
            sweep(s);
            last_sweep = Instant::now();
        }
        let (n, from) = match port.recv(&mut buf, Some(Duration::from_millis(50))) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let from = Peer {
            addr: from,
            via: port.clone(),
        };
        handle_frame(s, &buf[..n], &from, &jobs, None);
    }
}

/// The lane (owning core) a session id names, if the server has it.
fn lane_of(s: &Shared, session: u64) -> Option<&Mutex<HashMap<u64, Session>>> {
    s.lanes.get((session & 0xff) as usize)
}

/// One received frame: checked, then a handshake step or a request.
/// `here`: the reactor it arrived on (polled mode; `None`: the receive
/// thread, which handles every session and may wait on the engine). A
/// session's frame that arrived on another core than its owner is handed
/// to the owner first, still unparsed.
fn handle_frame(
    s: &Arc<Shared>,
    frame: &[u8],
    from: &Peer,
    jobs: &mpsc::Sender<Work>,
    here: Option<usize>,
) {
    if let (Some(here), Some((_, session))) = (here, wire::peek_session(frame)) {
        let owner = (session & 0xff) as usize;
        if owner != here && owner < s.lanes.len() {
            let (sh, f, peer, jobs) = (s.clone(), frame.to_vec(), from.clone(), jobs.clone());
            let sent = s.engine.on_reactor(owner, move || {
                handle_frame(&sh, &f, &peer, &jobs, Some(owner));
            });
            bump(match sent {
                Ok(()) => &s.counters.handed_off,
                Err(_) => &s.counters.handoff_dropped,
            });
            return;
        }
    }
    bump(&s.counters.frames_in);
    let (h, off, payload) = match wire::decode(frame) {
        Ok(x) => x,
        Err(FrameError::Version) => {
            bump(&s.counters.bad_version);
            return;
        }
        Err(_) => {
            bump(&s.counters.malformed);
            return;
        }
    };
    match h.kind {
        Kind::Hello if h.pkts == 1 => {
            // The session's owner: the core its flow lands on when every
            // core has a queue (RSS keeps the flow there); else the cores
            // in turn, its frames handed over in software.
            let lane = match here {
                Some(r) if s.queue_per_core => r,
                _ => s.next_lane.fetch_add(1, Ordering::Relaxed) as usize % s.lanes.len(),
            };
            if here.is_none() {
                on_hello(s, &h, payload, from, lane);
            } else {
                let _ = jobs.send(Work::Hello(h, payload.to_vec(), from.clone(), lane));
            }
        }
        Kind::Auth if h.pkts == 1 => on_auth(s, &h, payload, from),
        Kind::Request => {
            if let Some(job) = on_request(s, &h, off, payload, from) {
                if job.msg.first() == Some(&9) {
                    // Ping: answered here, the payload echoed.
                    let body = job.msg[1..].to_vec();
                    finish(s, &job, ("ping", 0, 0, body), Instant::now());
                } else if let Some(job) = dispatch_direct(s, job) {
                    let _ = jobs.send(Work::Request(job));
                }
            }
        }
        _ => bump(&s.counters.malformed),
    }
}

/// Forgets idle sessions.
fn sweep(s: &Shared) {
    let idle = s.cfg.idle;
    for lane in &s.lanes {
        if let Ok(mut m) = lane.lock() {
            m.retain(|_, x| x.last.elapsed() < idle || !x.busy.is_empty());
        }
    }
}

fn on_hello(s: &Shared, h: &Header, payload: &[u8], from: &Peer, lane: usize) {
    let Ok(hi) = hello::Hello::decode(payload) else {
        bump(&s.counters.malformed);
        return;
    };
    // An unknown organization gets a challenge too (with a key nobody
    // has), so probing cannot tell which organizations exist.
    let org = s
        .engine
        .orgs()
        .ok()
        .and_then(|orgs| orgs.into_iter().find(|o| o.name == hi.org))
        .map(|o| (o.id, o.key));
    // Unguessable, but for its low byte: the lane that owns it.
    let lane = lane.min(s.lanes.len() - 1);
    let id = (u64::from_le_bytes(auth::random()) & !0xff) | lane as u64;
    let server_nonce: [u8; 16] = auth::random();
    let max_frame = (hi.max_frame as usize).clamp(wire::MIN_FRAME, s.cfg.max_frame);
    let Ok(mut m) = s.lanes[lane].lock() else {
        return;
    };
    if m.values().filter(|x| !x.open).count() >= MAX_PENDING {
        let oldest = m
            .iter()
            .filter(|(_, x)| !x.open)
            .min_by_key(|(_, x)| x.last)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            m.remove(&k);
        }
    }
    m.insert(
        id,
        Session {
            peer: from.addr,
            org,
            org_name: hi.org,
            client_nonce: hi.nonce,
            server_nonce,
            open: false,
            last: Instant::now(),
            max_frame,
            ctx: Arc::new(Ctx {
                org: org.map_or(0, |o| o.0),
                files: Mutex::new(HashSet::new()),
            }),
            partial: HashMap::new(),
            busy: HashSet::new(),
            done: BTreeMap::new(),
            floor: 1,
        },
    );
    drop(m);
    send(
        s,
        Kind::Challenge,
        id,
        h.request,
        &server_nonce,
        wire::MIN_FRAME,
        from,
    );
}

fn on_auth(s: &Shared, h: &Header, payload: &[u8], from: &Peer) {
    let Some(Ok(mut m)) = lane_of(s, h.session).map(|l| l.lock()) else {
        bump(&s.counters.unknown_session);
        return;
    };
    let Some(x) = m
        .get_mut(&h.session)
        .filter(|x| !x.open && x.peer == from.addr)
    else {
        drop(m);
        bump(&s.counters.unknown_session);
        return;
    };
    let ok = x.org.is_some_and(|(_, key)| {
        let want = hello::client_proof(
            &key,
            &x.org_name,
            &x.client_nonce,
            &x.server_nonce,
            h.session,
        );
        auth::same(&want, payload)
    });
    if !ok {
        m.remove(&h.session);
        drop(m);
        bump(&s.counters.auth_failures);
        reject(
            s,
            h.session,
            h.request,
            -libc::EACCES,
            "authentication failed",
            from,
        );
        return;
    }
    let key = x.org.expect("checked above").1;
    x.open = true;
    x.last = Instant::now();
    let w = hello::Welcome {
        proof: hello::server_proof(&key, &x.client_nonce, &x.server_nonce, h.session),
        credits: s.cfg.credits,
        max_frame: s.cfg.max_frame as u32,
        idle_ms: s.cfg.idle.as_millis().min(u128::from(u32::MAX)) as u32,
    };
    drop(m);
    bump(&s.counters.sessions);
    send(
        s,
        Kind::Welcome,
        h.session,
        h.request,
        &w.encode(),
        wire::MIN_FRAME,
        from,
    );
}

fn on_request(s: &Shared, h: &Header, off: usize, payload: &[u8], from: &Peer) -> Option<Job> {
    let stale = || {
        bump(&s.counters.unknown_session);
        reject(
            s,
            h.session,
            h.request,
            -libc::ESTALE,
            "unknown or expired session",
            from,
        );
    };
    let Some(lane) = lane_of(s, h.session) else {
        stale();
        return None;
    };
    let Ok(mut m) = lane.lock() else {
        return None;
    };
    let Some(x) = m.get_mut(&h.session).filter(|x| x.open) else {
        drop(m);
        stale();
        return None;
    };
    if x.peer != from.addr {
        bump(&s.counters.wrong_peer);
        return None;
    }
    x.last = Instant::now();
    if h.ack > x.floor {
        x.floor = h.ack.min(h.request.saturating_add(1));
        let floor = x.floor;
        while x.done.first_key_value().is_some_and(|(r, _)| *r < floor) {
            x.done.pop_first();
        }
        if !x.partial.is_empty() {
            x.partial.retain(|r, _| *r >= floor);
        }
    }
    if h.request < x.floor {
        bump(&s.counters.replayed);
        return None;
    }
    if let Some((status, body, tries)) = x.done.get_mut(&h.request) {
        // A retransmission: the same answer again (for every packet of a
        // retransmitted request: requests of several packets have one-packet
        // answers), starting at another packet each time.
        let (status, body, start) = (*status, body.clone(), *tries * 3);
        *tries += 1;
        let frame = x.max_frame;
        drop(m);
        bump(&s.counters.resent);
        respond(
            s,
            (h.session, h.request),
            (status, &body),
            frame,
            start,
            from,
        );
        return None;
    }
    if x.busy.contains(&h.request) {
        return None;
    }
    if s.cfg.fence.as_ref().is_some_and(|f| !f.may_ack()) {
        return None;
    }
    if h.request >= x.floor + u64::from(s.cfg.credits) {
        bump(&s.counters.over_credits);
        return None;
    }
    let msg = if h.pkts == 1 {
        // One packet: the whole request, no reassembly.
        payload.to_vec()
    } else {
        let part = x
            .partial
            .entry(h.request)
            .or_insert_with(|| Partial::new(h));
        match part.add(h, off, payload) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(_) => {
                x.partial.remove(&h.request);
                bump(&s.counters.malformed);
                return None;
            }
        }
        x.partial
            .remove(&h.request)
            .map(|p| p.buf)
            .unwrap_or_default()
    };
    x.busy.insert(h.request);
    Some(Job {
        session: h.session,
        request: h.request,
        peer: from.clone(),
        frame: x.max_frame,
        msg,
        ctx: x.ctx.clone(),
    })
}

fn worker(s: &Shared, jobs: &Mutex<mpsc::Receiver<Work>>) {
    loop {
        let work = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let job = match work {
            Ok(Work::Request(job)) => job,
            Ok(Work::Hello(h, payload, from, lane)) => {
                on_hello(s, &h, &payload, &from, lane);
                continue;
            }
            Err(_) => return,
        };
        let t0 = Instant::now();
        let outcome = match Request::decode(&job.msg) {
            Ok(req) => run(s, &job.ctx, req),
            Err(_) => {
                bump(&s.counters.bad_request);
                ("invalid", 0, -libc::EINVAL, Vec::new())
            }
        };
        finish(s, &job, outcome, t0);
    }
}

/// Records a finished request, keeps its answer until acknowledged, and
/// sends it.
fn finish(s: &Shared, job: &Job, (op, bytes, status, body): Outcome, t0: Instant) {
    bump(&s.counters.requests);
    s.stats.record(op, bytes, t0.elapsed().as_micros() as u64);
    // The body is kept (for retransmissions) and sent as it is: the status
    // goes ahead of it in the first packet's head, so the data the engine
    // returned is never copied on its way out.
    let body = Arc::new(body);
    if let Some(Ok(mut m)) = lane_of(s, job.session).map(|l| l.lock()) {
        if let Some(x) = m.get_mut(&job.session) {
            x.busy.remove(&job.request);
            if job.request >= x.floor {
                x.done.insert(job.request, (status, body.clone(), 1));
            }
        }
    }
    respond(
        s,
        (job.session, job.request),
        (status, &body),
        job.frame,
        0,
        &job.peer,
    );
}

/// The fast path: a read within one 1 MiB range of a file the session may
/// touch travels through the reactors by itself ([`Engine::read_async`])
/// and is answered from the reactor that finishes it — no worker thread
/// waits on it. Gives the job back when it does not qualify.
fn dispatch_direct(s: &Arc<Shared>, job: Job) -> Option<Job> {
    if job.msg.first() != Some(&2) {
        return Some(job);
    }
    let Ok(Request::Read { ino, offset, len }) = Request::decode(&job.msg) else {
        return Some(job);
    };
    let range = crate::control::RANGE_BYTES;
    let end = offset.saturating_add(u64::from(len));
    if len == 0 || offset / range != (end - 1) / range {
        return Some(job);
    }
    let known = job
        .ctx
        .files
        .lock()
        .map(|f| f.contains(&ino))
        .unwrap_or(false);
    if !known {
        return Some(job);
    }
    let t0 = Instant::now();
    let shared = s.clone();
    s.engine.read_async(ino, offset, len as usize, move |r| {
        let outcome = match r {
            Ok(data) => ("read", data.len() as u64, 0, data),
            Err(e) => ("read", 0, e.errno(), Vec::new()),
        };
        finish(&shared, &job, outcome, t0);
    });
    None
}

type Outcome = (&'static str, u64, i32, Vec<u8>);

fn err(op: &'static str, e: &StoreError) -> Outcome {
    (op, 0, e.errno(), Vec::new())
}

/// Whether the session may touch file `ino`: a file of its organization.
fn allowed(s: &Shared, ctx: &Ctx, ino: Ino) -> Result<(), i32> {
    if ctx.files.lock().map(|f| f.contains(&ino)).unwrap_or(false) {
        return Ok(());
    }
    let st = s.engine.stat(ino).map_err(|e| e.errno())?;
    owned(s, ctx, st.fs)?;
    if let Ok(mut f) = ctx.files.lock() {
        f.insert(ino);
    }
    Ok(())
}

fn owned(s: &Shared, ctx: &Ctx, fs: FsId) -> Result<(), i32> {
    match s.engine.fs_owner(fs) {
        Ok(Some(org)) if org == ctx.org => Ok(()),
        Ok(_) => {
            bump(&s.counters.cross_org);
            Err(-libc::EACCES)
        }
        Err(e) => Err(e.errno()),
    }
}

fn fs_of_org(s: &Shared, ctx: &Ctx, name: &str) -> Result<FsId, i32> {
    let fs = s
        .engine
        .fs_by_name(name)
        .map_err(|e| e.errno())?
        .ok_or(-libc::ENOENT)?;
    owned(s, ctx, fs)?;
    Ok(fs)
}

/// A store attribute record as the wire carries it.
fn wire_stat(st: crate::store::Stat, cookie: u64) -> FileStat {
    FileStat {
        ino: st.ino,
        size: st.size,
        blocks: st.blocks,
        mode: st.mode,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        atime: st.atime,
        mtime: st.mtime,
        ctime: st.ctime,
        cookie,
        name: st.name,
    }
}

fn stat_body(st: crate::store::Stat) -> Vec<u8> {
    let mut w = Writer::default();
    wire_stat(st, 0).encode(&mut w);
    w.buf
}

/// The wire's xattr mode byte (0 either, 1 create, 2 replace).
fn xattr_mode(mode: u8) -> XattrMode {
    match mode {
        1 => XattrMode::Create,
        2 => XattrMode::Replace,
        _ => XattrMode::Any,
    }
}

/// The wire's rename flags byte (1 no-replace, 2 exchange).
fn rename_flags(flags: u8) -> RenameFlags {
    RenameFlags {
        noreplace: flags & 1 != 0,
        exchange: flags & 2 != 0,
    }
}

/// A list of xattr names as the wire carries it: a count, then each name.
fn names_body(names: Vec<Vec<u8>>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(names.len() as u32);
    for n in names {
        w.bytes(&n);
    }
    w.buf
}

/// Runs a path request (its file system already checked as the session's).
fn run_path(e: &Engine, ctx: &Ctx, fs: FsId, req: Request) -> Outcome {
    let done = |op: &'static str, r: crate::engine::Result<Vec<u8>>| match r {
        Ok(body) => (op, 0, 0, body),
        Err(er) => err(op, &er),
    };
    match req {
        Request::Open { create, path, .. } => {
            let ino = match e.lookup(fs, &path) {
                Ok(Some(i)) => Ok(i),
                Ok(None) if create => e.create(fs, &path),
                Ok(None) => return ("open", 0, -libc::ENOENT, Vec::new()),
                Err(er) => Err(er),
            };
            match ino.and_then(|i| e.stat(i)) {
                Ok(st) if st.is_dir() => ("open", 0, -libc::EISDIR, Vec::new()),
                Ok(st) => {
                    if let Ok(mut f) = ctx.files.lock() {
                        f.insert(st.ino);
                    }
                    let mut w = Writer::default();
                    w.u64(st.ino).u64(st.size);
                    ("open", 0, 0, w.buf)
                }
                Err(er) => err("open", &er),
            }
        }
        Request::List {
            path, cookie, max, ..
        } => done(
            "list",
            e.list_page(fs, &path, cookie, max.min(4096) as usize)
                .map(|page| {
                    let mut w = Writer::default();
                    w.u32(page.len() as u32);
                    for (st, c) in page {
                        wire_stat(st, c).encode(&mut w);
                    }
                    w.buf
                }),
        ),
        Request::Unlink { path, .. } => done("unlink", e.unlink(fs, &path).map(|()| Vec::new())),
        Request::Mkdir { path, perm, .. } => done(
            "mkdir",
            e.mkdir(fs, &path, perm & 0o7777)
                .and_then(|i| e.stat(i))
                .map(stat_body),
        ),
        Request::Rmdir { path, .. } => done("rmdir", e.rmdir(fs, &path).map(|()| Vec::new())),
        Request::Rename {
            from, to, flags, ..
        } => {
            let flags = rename_flags(flags);
            done(
                "rename",
                e.rename(fs, &from, &to, flags).map(|()| Vec::new()),
            )
        }
        Request::StatPath { path, .. } => done("stat", e.stat_path(fs, &path).map(stat_body)),
        Request::Link { from, to, .. } => done("link", e.link(fs, &from, &to).map(stat_body)),
        Request::Symlink { target, path, .. } => {
            done("symlink", e.symlink(fs, &target, &path).map(stat_body))
        }
        Request::Readlink { path, .. } => done("readlink", e.readlink_path(fs, &path)),
        Request::SetXattr {
            path,
            name,
            value,
            mode,
            ..
        } => {
            let mode = xattr_mode(mode);
            done(
                "setxattr",
                e.stat_path(fs, &path)
                    .and_then(|st| e.setxattr(st.ino, name.as_bytes(), &value, mode, root_ctx()))
                    .map(|()| Vec::new()),
            )
        }
        Request::GetXattr { path, name, .. } => done(
            "getxattr",
            e.stat_path(fs, &path)
                .and_then(|st| e.getxattr(st.ino, name.as_bytes())),
        ),
        Request::ListXattr { path, .. } => done(
            "listxattr",
            e.stat_path(fs, &path)
                .and_then(|st| e.listxattr(st.ino))
                .map(names_body),
        ),
        Request::RemoveXattr { path, name, .. } => done(
            "removexattr",
            e.stat_path(fs, &path)
                .and_then(|st| e.removexattr(st.ino, name.as_bytes(), root_ctx()))
                .map(|()| Vec::new()),
        ),
        _ => ("invalid", 0, -libc::EINVAL, Vec::new()),
    }
}

/// A slice call from a peer node: only sessions of the slices'
/// organization may make one.
fn run_slice(s: &Shared, ctx: &Ctx, req: crate::net::slice::SliceRequest) -> Outcome {
    let Some(slices) = &s.cfg.slices else {
        return ("slice", 0, -libc::EOPNOTSUPP, Vec::new());
    };
    let org = match s.slice_org.get() {
        Some(o) => Some(*o),
        None => s
            .engine
            .orgs()
            .ok()
            .and_then(|os| os.into_iter().find(|o| o.name == slices.org()))
            .map(|o| *s.slice_org.get_or_init(|| o.id)),
    };
    if org != Some(ctx.org) {
        return ("denied", 0, -libc::EACCES, Vec::new());
    }
    match slices.serve(req) {
        Ok(body) => ("slice", body.len() as u64, 0, body),
        Err(code) => ("slice", 0, code, Vec::new()),
    }
}

fn run(s: &Shared, ctx: &Ctx, req: Request) -> Outcome {
    let e = &s.engine;
    let req = match req {
        Request::Slice(r) => return run_slice(s, ctx, r),
        req => req,
    };
    if let Some(name) = req.fs_name() {
        return match fs_of_org(s, ctx, name) {
            Ok(fs) => match req {
                Request::Ns(r) => ns::run(s, ctx, fs, r),
                req => run_path(e, ctx, fs, req),
            },
            Err(code) => ("denied", 0, code, Vec::new()),
        };
    }
    let ino_of = |r: &Request| match r {
        Request::Read { ino, .. }
        | Request::Write { ino, .. }
        | Request::Stat { ino }
        | Request::Truncate { ino, .. } => Some(*ino),
        _ => None,
    };
    if let Some(ino) = ino_of(&req) {
        if let Err(code) = allowed(s, ctx, ino) {
            return ("denied", 0, code, Vec::new());
        }
    }
    match req {
        Request::Read { ino, offset, len } => match e.read(ino, offset, len as usize) {
            Ok(data) => ("read", data.len() as u64, 0, data),
            Err(er) => err("read", &er),
        },
        Request::Write { ino, offset, data } => {
            let n = data.len() as u64;
            match e.write(ino, offset, data) {
                Ok(()) => ("write", n, 0, Vec::new()),
                Err(er) => err("write", &er),
            }
        }
        Request::Sync => match e.sync() {
            Ok(()) => ("sync", 0, 0, Vec::new()),
            Err(er) => err("sync", &er),
        },
        Request::Stat { ino } => match e.stat(ino) {
            Ok(st) => ("stat", 0, 0, stat_body(st)),
            Err(er) => err("stat", &er),
        },
        Request::Ping { payload } => ("ping", 0, 0, payload),
        Request::Truncate { ino, size } => match e.truncate(ino, size) {
            Ok(()) => ("truncate", 0, 0, Vec::new()),
            Err(er) => err("truncate", &er),
        },
        _ => ("invalid", 0, -libc::EINVAL, Vec::new()),
    }
}
