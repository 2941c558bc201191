//! `flint serve` and `flint format`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::bdev::{self, BlockDevice};
use flint_dataplane::mempool::{DmaRegion, HugePages};
use flint_dataplane::nic::udp::UdpPort;

use super::config::ApplianceConfig;
use super::events::{Events, Level, Watch};
use super::mgmt::{Mgmt, Node};
use crate::engine::Engine;
use crate::net::server::{Server, ServerConfig};
use crate::store::{StoreConfig, StoreError};

/// How `serve` treats unformatted devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Format devices that carry no Flint superblock (first run).
    pub init: bool,
    /// Format before serving even if they do (needs `force` for devices of
    /// another engine).
    pub format: bool,
    /// Overwrite devices that belong to another engine.
    pub force: bool,
}

/// Opens the config's devices (creating file-backed ones).
pub fn open_devices(cfg: &ApplianceConfig) -> Result<Vec<Arc<dyn BlockDevice>>, String> {
    cfg.devices
        .iter()
        .map(|d| {
            if let Some(dir) = d.path.as_ref().and_then(|p| p.parent()) {
                if d.size.is_some() && !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!(
                            "device.{}.path: cannot create {}: {e}",
                            d.name,
                            dir.display()
                        )
                    })?;
                }
            }
            bdev::open(d).map_err(|e| format!("device.{}: {e}", d.name))
        })
        .collect()
}

fn store_config(cfg: &ApplianceConfig, reactors: usize) -> StoreConfig {
    StoreConfig {
        chunk_size: cfg.engine.chunk_size.0 as u32,
        journal_blocks: cfg.engine.journal_blocks,
        checkpoint_blocks: cfg.engine.checkpoint_blocks,
        shards: if cfg.engine.shards == 0 {
            reactors as u32
        } else {
            cfg.engine.shards
        },
    }
}

fn check_hugepages(cfg: &ApplianceConfig) -> Result<(), String> {
    if cfg.memory.hugepages == HugePages::Require {
        DmaRegion::new(2 << 20, HugePages::Require).map_err(|e| {
            format!(
                "memory.hugepages = \"require\" but none can be had ({e}); reserve some \
                 (echo 512 > /proc/sys/vm/nr_hugepages) or set hugepages = \"auto\""
            )
        })?;
    }
    Ok(())
}

/// Formats the config's devices as a new engine, with a progress bar.
pub fn format(cfg: &ApplianceConfig, force: bool, progress: bool) -> Result<(), String> {
    let devs = open_devices(cfg)?;
    let engine = Engine::start(&cfg.reactor).map_err(|e| e.to_string())?;
    let sc = store_config(cfg, engine.reactor_stats().len());
    if progress {
        eprint!("formatting {} devices ({} shards) ", devs.len(), sc.shards);
        let _ = std::io::stderr().flush();
    }
    let r = engine.format(devs, sc, force).map_err(|e| match e {
        StoreError::AlreadyFormatted { device } => format!(
            "device {device} already holds a Flint engine; pass --force to overwrite it (its data is lost)"
        ),
        e => e.to_string(),
    });
    if progress {
        eprintln!(
            "{}",
            if r.is_ok() {
                "[##########] done"
            } else {
                "failed"
            }
        );
    }
    let _ = engine.close();
    r
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts),
/// so [`wait_for_signal`] receives them.
pub fn block_signals() {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGTERM or SIGINT arrives (they must be blocked first).
pub fn wait_for_signal() -> i32 {
    // SAFETY: as above; sigwait writes the signal number into `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}

/// Runs a node until SIGTERM/SIGINT: stops taking requests, drains, makes
/// everything durable and checkpoints, then returns.
pub fn serve(cfg: &ApplianceConfig, opts: ServeOptions) -> Result<(), String> {
    block_signals();
    check_hugepages(cfg)?;
    let data = cfg.data_addr().map_err(|e| e.to_string())?;
    let mgmt_addr = cfg.mgmt_addr().map_err(|e| e.to_string())?;
    // The transport first: a port in use, or DPDK that cannot start, is a
    // config error before devices are touched.
    let (queues, max_frame) = transport(cfg, data)?;
    let devs = open_devices(cfg)?;
    let mut engine = Engine::start(&cfg.reactor).map_err(|e| e.to_string())?;
    let reactors = engine.reactor_stats().len();
    if opts.format {
        engine
            .format(devs.clone(), store_config(cfg, reactors), opts.force)
            .map_err(|e| format!("format: {e}"))?;
    }
    let seal = Some(Duration::from_millis(cfg.engine.seal_ms.max(1)));
    engine.set_meta_cache((cfg.engine.meta_cache_mib.max(1) << 20) as usize);
    let present: Vec<Option<Arc<dyn BlockDevice>>> = devs.iter().cloned().map(Some).collect();
    let blank = |e: &StoreError| {
        matches!(
            e,
            StoreError::Format {
                error: crate::format::FormatError::NotFlint,
                ..
            }
        ) || matches!(e, StoreError::Mismatch { reason } if reason.contains("no device with a Flint superblock"))
    };
    match engine.open_with(present.clone(), seal) {
        Ok(()) => {}
        Err(e) if opts.init && blank(&e) => {
            // First start. Formatting refuses if any device holds an
            // engine, so --init never overwrites data.
            tracing::info!(devices = devs.len(), "first start: formatting the devices");
            engine
                .format(devs.clone(), store_config(cfg, reactors), false)
                .map_err(|e| match e {
                    StoreError::AlreadyFormatted { device } => format!(
                        "device {device} holds a Flint engine but others do not; not formatting \
                         (replace or remove the blank devices, or `flint format --force`)"
                    ),
                    e => format!("format: {e}"),
                })?;
            engine.open_with(present, seal).map_err(|e| e.to_string())?;
        }
        Err(e) if blank(&e) => {
            return Err(format!(
                "{e} (run `flint format --config <file>`, or `flint serve --init` on a first start)"
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    let events = Arc::new(Events::default());
    provision(&engine, cfg, &events)?;
    // Slices for the cluster's buckets: peers reach them as the cluster's
    // organization, whose key every node shares.
    let cluster_key = match cfg.cluster.as_ref().and_then(|c| c.key_file.as_ref()) {
        Some(path) => Some(read_cluster_key(path)?),
        None => None,
    };
    let slices = match (cfg.cluster.as_ref(), cluster_key) {
        (Some(c), Some(key)) if c.slice_dir.is_some() => {
            let org = crate::cluster::buckets::CLUSTER_ORG;
            let orgs = engine.orgs().map_err(|e| e.to_string())?;
            match orgs.iter().find(|o| o.name == org) {
                Some(o) if o.key != key => {
                    return Err(format!(
                        "config: cluster.key_file: this node's engine holds another key for {org}; \
                         every node needs the same key file"
                    ))
                }
                Some(_) => {}
                None => {
                    engine
                        .org_create_keyed(org, key)
                        .map_err(|e| e.to_string())?;
                }
            }
            let dir = c.slice_dir.as_ref().expect("checked");
            let s = crate::cluster::slices::Slices::new(dir, org, c.slice_size.0)
                .map_err(|e| format!("config: cluster.slice_dir: {}: {e}", dir.display()))?;
            Some(Arc::new(s))
        }
        _ => None,
    };
    let engine = Arc::new(engine);
    // In a cluster: register under a lease before serving; the fence it
    // keeps gates every request and answer of the data server.
    let agent = match &cfg.cluster {
        Some(c) => {
            let record = crate::cluster::map::NodeRecord {
                id: c.node,
                data_addr: data.to_string(),
                mgmt_addr: mgmt_addr.to_string(),
                cores: reactors as u16,
                devices: devs.len() as u32,
            };
            let a = crate::cluster::agent::Agent::start(c, record).map_err(|e| e.to_string())?;
            println!(
                "flint: node {} of cluster {} (etcd {})",
                c.node,
                c.name,
                c.etcd.join(",")
            );
            Some(a)
        }
        None => None,
    };
    let scfg = ServerConfig {
        credits: cfg.server.credits,
        max_frame: cfg.server.max_frame.min(max_frame),
        idle: Duration::from_secs(cfg.server.idle_s.max(1)),
        workers: cfg.server.workers,
        fence: agent.as_ref().map(|a| a.view().fence_handle()),
        slices: slices.clone(),
    };
    // Queue i is polled by reactor i (round robin if there are more): a
    // DPDK queue pair, or one of the kernel UDP port's sockets.
    let server = Server::start_polled(
        engine.clone(),
        queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| (i % reactors, q))
            .collect(),
        scfg,
    )
    .map_err(|e| e.to_string())?;
    // The NVMe/TCP target, when the config exports volumes.
    let nvmf = match &cfg.nvmf {
        Some(n) => {
            let subsystems = n.subsystems(&engine)?;
            let listen = n
                .listen
                .parse()
                .map_err(|_| "nvmf.listen: not an address".to_string())?;
            let t = crate::nvmf::NvmfServer::start(
                engine.clone(),
                subsystems,
                listen,
                n.workers,
                n.max_io_queues,
            )
            .map_err(|e| e.to_string())?;
            println!("flint: NVMe/TCP target on tcp://{}", t.addr());
            Some(t)
        }
        None => None,
    };
    let mut node = Node::new(
        engine.clone(),
        server.view(),
        events.clone(),
        cfg.server.token.clone().filter(|t| !t.is_empty()),
    );
    node.nvmf = nvmf.as_ref().map(|t| t.target().clone());
    node.cluster = agent.as_ref().map(|a| (a.node(), a.view()));
    // The buckets this node serves, when the node keeps slices.
    let buckets = match (&cfg.cluster, &agent, cluster_key, &slices) {
        (Some(c), Some(a), Some(key), Some(_)) => {
            let host = crate::cluster::buckets::HostConfig {
                node: c.node,
                keys: crate::cluster::keys::Keys::new(&c.name),
                etcd: c.etcd.clone(),
                key,
                slice_size: c.slice_size.0,
                ip: data.ip(),
                rebuild: c.rebuild_policy(),
            };
            Some(
                crate::cluster::buckets::BucketHost::start(host, a.view())
                    .map_err(|e| format!("cannot start the bucket host: {e}"))?,
            )
        }
        _ => None,
    };
    let node = Arc::new(node);
    let mgmt = Mgmt::start(mgmt_addr, node).map_err(|e| {
        format!("config: server.mgmt_addr: cannot listen on {mgmt_addr}: {e}; stop the other server or choose another port")
    })?;
    // Quotas whose counting a stop or crash cut short.
    for id in engine.quota_pending() {
        super::quotas::scan_in_background(engine.clone(), events.clone(), id);
    }
    // The monitor: device health, degraded reads, capacity, quotas.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (engine, events, stop) = (engine.clone(), events.clone(), stop.clone());
        std::thread::Builder::new()
            .name("flint-monitor".into())
            .spawn(move || {
                let mut w = Watch::default();
                while !stop.load(Ordering::Acquire) {
                    w.look(&engine, &events);
                    match engine.quota_tick(crate::store::now_nanos()) {
                        Ok(found) => super::quotas::report(&events, found),
                        Err(e) => tracing::warn!(error = %e, "checking quotas failed"),
                    }
                    for _ in 0..10 {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };
    events.push(
        Level::Info,
        "started",
        format!(
            "serving {} devices, {} shards on {} reactors; data on udp://{}, management on http://{}",
            devs.len(),
            engine.shard_map().shards(),
            reactors,
            server.addr(),
            mgmt.addr()
        ),
    );
    println!(
        "flint: serving; data udp://{} management http://{}",
        server.addr(),
        mgmt.addr()
    );
    let sig = wait_for_signal();
    events.push(
        Level::Info,
        "stopping",
        format!("signal {sig}: draining and checkpointing"),
    );
    // Leave the cluster first: the lease is revoked, so the shards fail
    // over at once instead of after the TTL.
    if let Some(b) = buckets {
        b.stop();
    }
    if let Some(a) = agent {
        a.stop();
    }
    mgmt.stop();
    if let Some(t) = nvmf {
        t.stop();
    }
    server.stop();
    stop.store(true, Ordering::Release);
    let _ = monitor.join();
    drop(events);
    // Quota scans stop between steps (they go on at the next start).
    engine.quota_stop_scans();
    let since = std::time::Instant::now();
    while Arc::strong_count(&engine) > 1 && since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let engine = match Arc::try_unwrap(engine) {
        Ok(e) => e,
        Err(_) => return Err("internal: the engine is still in use at shutdown".into()),
    };
    engine
        .close()
        .map_err(|e| format!("final checkpoint failed: {e}"))?;
    tracing::info!("stopped cleanly");
    println!("flint: stopped cleanly");
    Ok(())
}

/// How the data protocol reaches the network: queues the reactors poll
/// (a kernel UDP socket each, or a DPDK port's queue pairs).
type Queues = Vec<Arc<dyn flint_dataplane::nic::Port>>;

/// Reactors the config starts.
fn reactor_count(cfg: &ApplianceConfig) -> usize {
    if cfg.reactor.cores.is_empty() {
        flint_dataplane::placement::allowed_cores()
            .map(|c| c.len())
            .unwrap_or(1)
            .max(1)
    } else {
        cfg.reactor.cores.len()
    }
}

/// Opens the data transport: kernel UDP, or DPDK (falling back to UDP only
/// when the config asks). Returns it and the largest frame it carries.
fn transport(cfg: &ApplianceConfig, data: std::net::SocketAddr) -> Result<(Queues, usize), String> {
    let udp = || -> Result<(Queues, usize), String> {
        // A node killed a moment ago may hold its port a little longer
        // (the kernel tears down its io_uring, which polled the socket,
        // after the process is gone): retry briefly before calling the
        // port taken.
        let t0 = std::time::Instant::now();
        // A socket per reactor on the one port: the kernel keeps each
        // client's datagrams on one, so each session lives on one core.
        let group = loop {
            match UdpPort::bind_group(data, reactor_count(cfg)) {
                Ok(g) => break g,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && t0.elapsed() < Duration::from_secs(2) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(format!(
                    "config: server.data_addr: {e}; stop the other server or choose another port"
                ))
                }
            }
        };
        let queues = group
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn flint_dataplane::nic::Port>)
            .collect();
        Ok((queues, flint_dataplane::nic::MAX_FRAME))
    };
    if cfg.server.transport == super::config::Transport::Udp {
        return udp();
    }
    let d = cfg
        .dpdk
        .as_ref()
        .ok_or("config: dpdk: missing [dpdk] table")?;
    let opened = dpdk_port(cfg, d, data.port());
    match opened {
        Ok(x) => Ok(x),
        Err(e) if d.fallback_to_udp => {
            tracing::warn!(error = %e, "DPDK unavailable; serving on kernel UDP (dpdk.fallback_to_udp)");
            udp()
        }
        Err(e) => Err(format!(
            "{e} (set dpdk.fallback_to_udp = true to serve on kernel UDP instead)"
        )),
    }
}

#[cfg(feature = "dpdk")]
fn dpdk_port(
    cfg: &ApplianceConfig,
    d: &super::config::DpdkSection,
    udp_port: u16,
) -> Result<(Queues, usize), String> {
    use flint_dataplane::nic::dpdk::{DpdkConfig, DpdkPort, Hugepages};
    let mut dc = DpdkConfig {
        eal_args: d.eal(&cfg.reactor.cores),
        port: d.port,
        ip: d.ip,
        udp_port,
        mtu: d.mtu,
        // One queue pair per reactor, unless the config says how many.
        queues: if d.queues == 0 {
            reactor_count(cfg) as u16
        } else {
            d.queues
        },
        zero_copy: d.zero_copy,
        link_wait: std::time::Duration::from_secs(2),
        hugepages: match d.hugepages.as_str() {
            "require" => Hugepages::Require,
            "off" => Hugepages::Off,
            _ => Hugepages::Auto,
        },
    };
    flint_dataplane::nic::dpdk::eal_init(&dc.eal_args, dc.hugepages)
        .map_err(|e| format!("dpdk: {e}"))?;
    let p = match DpdkPort::open_port(dc.clone()) {
        Ok(p) => p,
        // A device with fewer queues: as many as it has (the receiving
        // reactors hand work to the others in software).
        Err(e) if d.queues == 0 && e.to_string().contains("asked for") => {
            dc.queues = 0;
            DpdkPort::open_port(dc).map_err(|e| format!("dpdk: {e}"))?
        }
        Err(e) => return Err(format!("dpdk: {e}")),
    };
    let frame = p.max_frame();
    let p = Arc::new(p);
    let queues = p
        .queues()
        .into_iter()
        .map(|q| Arc::new(q) as Arc<dyn flint_dataplane::nic::Port>)
        .collect();
    Ok((queues, frame))
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_port(
    _cfg: &ApplianceConfig,
    _d: &super::config::DpdkSection,
    _udp_port: u16,
) -> Result<(Queues, usize), String> {
    Err(
        "server.transport = \"dpdk\" but this flint was built without DPDK \
         (cargo build --release -p flint-engine --features dpdk)"
            .into(),
    )
}

/// Creates the config's organizations (writing their keys) and file
/// systems, if they do not exist yet.
fn provision(engine: &Engine, cfg: &ApplianceConfig, events: &Events) -> Result<(), String> {
    let orgs = engine.orgs().map_err(|e| e.to_string())?;
    for o in &cfg.orgs {
        if orgs.iter().any(|x| x.name == o.name) {
            continue;
        }
        let org = engine.org_create(&o.name).map_err(|e| e.to_string())?;
        write_key(&o.key_file, &org.key)?;
        events.push(
            Level::Info,
            "org_created",
            format!(
                "organization {} created; its key is in {}",
                o.name,
                o.key_file.display()
            ),
        );
    }
    let orgs = engine.orgs().map_err(|e| e.to_string())?;
    for f in &cfg.filesystems {
        if engine
            .fs_by_name(&f.name)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            continue;
        }
        let org = orgs.iter().find(|o| o.name == f.org).ok_or_else(|| {
            format!(
                "config: filesystem.{}.org: no organization {}",
                f.name, f.org
            )
        })?;
        let id = engine
            .fs_create(&f.name, f.k, f.m, f.reduction, f.capacity.0)
            .map_err(|e| format!("config: filesystem.{}: {e}", f.name))?;
        engine.fs_set_owner(id, org.id).map_err(|e| e.to_string())?;
        if f.write_back {
            engine
                .fs_set_write_back(id, true)
                .map_err(|e| e.to_string())?;
        }
        events.push(
            Level::Info,
            "fs_created",
            format!(
                "file system {} ({}+{}) created for {}",
                f.name, f.k, f.m, f.org
            ),
        );
    }
    engine.sync().map_err(|e| e.to_string())
}

/// The cluster's key: 64 hex digits in `path`, the same on every node.
fn read_cluster_key(path: &std::path::Path) -> Result<crate::net::auth::Key, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "config: cluster.key_file: cannot read {}: {e}",
            path.display()
        )
    })?;
    crate::net::auth::key_from_hex(text.trim()).ok_or_else(|| {
        format!(
            "config: cluster.key_file: {} does not hold 64 hex digits (make one with \
             `head -c 32 /dev/urandom | xxd -p -c 64`, and copy it to every node)",
            path.display()
        )
    })
}

fn write_key(path: &std::path::Path, key: &crate::net::auth::Key) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
    writeln!(f, "{}", crate::net::auth::key_to_hex(key)).map_err(|e| e.to_string())
}
