//! Serving NVMe/TCP: a thread accepts connections (and runs the
//! keep-alive sweep); each connection — one NVMe queue — is then polled
//! by one reactor, round robin, woken when its socket is readable or a
//! job of it finishes. The reactor reads what arrived, runs the queue's
//! state machine, hands jobs to the engine and writes the answers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::io::Workers;
use super::queue::{Done, Queue};
use super::subsystem::{Subsystem, Target};
use crate::engine::Engine;

/// How often the keep-alive sweep runs.
const SWEEP: Duration = Duration::from_millis(250);
/// Output a queue may hold before it stops reading more commands.
const MAX_OUTPUT: usize = 8 << 20;

/// A running NVMe/TCP target.
pub struct NvmfServer {
    target: Arc<Target>,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    workers: Arc<Workers>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

/// Counts a connection poller while it lives.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NvmfServer {
    /// Listens on `listen` and serves `subsystems` from `engine`, with
    /// `workers` threads for blocking jobs.
    pub fn start(
        engine: Arc<Engine>,
        subsystems: Vec<Subsystem>,
        listen: SocketAddr,
        workers: usize,
        max_io_queues: u32,
    ) -> std::io::Result<NvmfServer> {
        let listener = TcpListener::bind(listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("nvmf.listen: cannot listen on {listen}: {e} (is another target there?)"),
            )
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Target::new(subsystems, addr, max_io_queues));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let workers = Arc::new(Workers::start(workers)?);
        let acceptor = {
            let (t, e, s, l, w) = (
                target.clone(),
                engine.clone(),
                stop.clone(),
                live.clone(),
                workers.clone(),
            );
            std::thread::Builder::new()
                .name("nvmf-accept".into())
                .spawn(move || accept_loop(listener, t, e, s, l, w))?
        };
        tracing::info!(%addr, "NVMe/TCP target listening");
        Ok(NvmfServer {
            target,
            engine,
            stop,
            live,
            workers,
            acceptor: Some(acceptor),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.target.addr
    }

    /// The target (subsystems, controllers, counters).
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// Stops: no new connections, every queue closed, workers joined.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        wake_all(&self.engine);
        let until = Instant::now() + Duration::from_secs(5);
        while self.live.load(Ordering::Acquire) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.workers.stop();
    }
}

impl Drop for NvmfServer {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.halt();
        }
    }
}

fn wake_all(engine: &Engine) {
    for r in 0..engine.reactor_count() {
        let _ = engine.on_reactor(r, || {});
    }
}

fn accept_loop(
    listener: TcpListener,
    target: Arc<Target>,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    workers: Arc<Workers>,
) {
    let mut next = 0usize;
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = Instant::now();
            if target.sweep() > 0 {
                // Their queues notice at their next poll.
                wake_all(&engine);
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                target.stats.connections.fetch_add(1, Ordering::Relaxed);
                let reactor = next % engine.reactor_count().max(1);
                next += 1;
                if let Err(e) = serve_on(reactor, stream, &target, &engine, &stop, &live, &workers)
                {
                    tracing::warn!(%peer, error = %e, "NVMe/TCP connection not served");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                tracing::warn!(error = %e, "NVMe/TCP accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A connection's state on its reactor.
struct Conn {
    stream: TcpStream,
    queue: Queue,
    rx: Vec<u8>,
    filled: usize,
    inbox: Arc<Mutex<Vec<Done>>>,
}

fn serve_on(
    reactor: usize,
    stream: TcpStream,
    target: &Arc<Target>,
    engine: &Arc<Engine>,
    stop: &Arc<AtomicBool>,
    live: &Arc<AtomicUsize>,
    workers: &Arc<Workers>,
) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    let queue = Queue::new(target.clone());
    let mut c = Conn {
        rx: vec![0; queue.max_pdu() * 2],
        stream,
        queue,
        filled: 0,
        inbox: Arc::new(Mutex::new(Vec::new())),
    };
    live.fetch_add(1, Ordering::AcqRel);
    let guard = Live(live.clone());
    let (engine2, stop, workers) = (engine.clone(), stop.clone(), workers.clone());
    engine
        .reactor_poller(reactor, Duration::from_millis(100), Some(fd), move || {
            let _held = &guard;
            let r = poll(&mut c, reactor, &engine2, &stop, &workers);
            if r.is_none() {
                c.queue.shutdown();
            }
            r
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// One poll of a connection: `None` once it is closed.
fn poll(
    c: &mut Conn,
    reactor: usize,
    engine: &Arc<Engine>,
    stop: &AtomicBool,
    workers: &Workers,
) -> Option<bool> {
    if stop.load(Ordering::Acquire) {
        return None;
    }
    let mut work = false;
    let finished: Vec<Done> = c
        .inbox
        .lock()
        .map(|mut g| std::mem::take(&mut *g))
        .unwrap_or_default();
    for d in finished {
        c.queue.complete(d);
        work = true;
    }
    let mut eof = false;
    while c.filled < c.rx.len() && c.queue.output().len() < MAX_OUTPUT {
        match c.stream.read(&mut c.rx[c.filled..]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                c.filled += n;
                work = true;
                let (used, jobs) = c.queue.receive(&c.rx[..c.filled]);
                c.rx.copy_within(used..c.filled, 0);
                c.filled -= used;
                for job in jobs {
                    let (inbox, e) = (c.inbox.clone(), engine.clone());
                    workers.submit(engine, job, move |d| {
                        if let Ok(mut g) = inbox.lock() {
                            g.push(d);
                        }
                        // Wakes the connection's reactor.
                        let _ = e.on_reactor(reactor, || {});
                    });
                }
                if c.queue.closed().is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    let out = c.queue.output();
    while !out.is_empty() {
        match c.stream.write(out) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                out.drain(..n);
                work = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    let pending = !c.queue.output().is_empty();
    if eof || (c.queue.closed().is_some() && !pending) {
        if let Some(why) = c.queue.closed() {
            tracing::info!(reason = why, "NVMe/TCP connection closed");
        }
        return None;
    }
    Some(work || pending)
}
