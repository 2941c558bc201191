//! `flint-bench slices`: an engine whose devices are slices on peer nodes
//! (in-process data-protocol servers over loopback UDP, their slices on
//! tmpfs), beside the same engine on local RAM devices: 1 MiB writes made
//! durable and 1 MiB reads, healthy and with one node stopped (reads from
//! parity), and the rebuild of the lost node's chunks onto a fourth node
//! beside the healthy read rate; then an engine on four nodes' slices that
//! loses one and is rebuilt onto the three survivors (paced, as a bucket
//! host does) while a reader runs: the rebuild rate and the reader's rate
//! beside its healthy and degraded rates.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::cluster::remote::{RemoteDevice, RemoteSpec};
use flint_engine::cluster::slices::Slices;
use flint_engine::engine::Engine;
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::store::StoreConfig;

use crate::args::Args;
use crate::report::{ratio, Table};

const ORG: &str = "_cluster";
const KEY: [u8; 32] = [0x5c; 32];

fn engine() -> Result<Engine, String> {
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    Engine::start(&ReactorConfig {
        cores: vec![cpus[cpus.len() - 1]],
        pin: false,
        ..ReactorConfig::default()
    })
    .map_err(|e| e.to_string())
}

fn ram(n: usize, bytes: u64) -> Result<Vec<Arc<dyn BlockDevice>>, String> {
    (0..n)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("ram{i}"), Backend::Memory);
            s.size = Some(ByteSize(bytes));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect()
}

struct Peer {
    server: Option<Server>,
    _engine: Arc<Engine>,
}

fn peer(dir: &std::path::Path, bytes: u64) -> Result<Peer, String> {
    // The peer's own engine only authenticates sessions: small devices.
    let devs = ram(3, 32 << 20)?;
    let mut e = engine()?;
    let small = StoreConfig {
        journal_blocks: 256,
        checkpoint_blocks: 512,
        ..StoreConfig::default()
    };
    e.format(devs.clone(), small, true)
        .map_err(|e| e.to_string())?;
    e.open(devs.into_iter().map(Some).collect())
        .map_err(|e| e.to_string())?;
    e.org_create_keyed(ORG, KEY).map_err(|e| e.to_string())?;
    let e = Arc::new(e);
    let slices = Slices::new(dir, ORG, bytes).map_err(|e| e.to_string())?;
    let port = UdpPort::bind("127.0.0.1:0".parse::<SocketAddr>().expect("valid"))
        .map_err(|e| e.to_string())?;
    let server = Server::start_polled(
        e.clone(),
        vec![(0, Arc::new(port))],
        ServerConfig {
            slices: Some(Arc::new(slices)),
            ..ServerConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Peer {
        server: Some(server),
        _engine: e,
    })
}

fn remote(
    p: &Peer,
    i: usize,
    bytes: u64,
    epoch: &Arc<AtomicU64>,
) -> Result<Arc<dyn BlockDevice>, String> {
    remote_slice(p, i, "bench", bytes, epoch)
}

fn remote_slice(
    p: &Peer,
    i: usize,
    slice: &str,
    bytes: u64,
    epoch: &Arc<AtomicU64>,
) -> Result<Arc<dyn BlockDevice>, String> {
    let addr = p.server.as_ref().ok_or("the node is stopped")?.addr();
    let d = RemoteDevice::open(RemoteSpec {
        name: format!("node{i}"),
        peer: addr,
        slice: slice.into(),
        bytes,
        org: ORG.into(),
        key: KEY,
        epoch: epoch.clone(),
        timeout: Duration::from_millis(500),
    })
    .map_err(|e| format!("node {i}: {e}"))?;
    Ok(Arc::new(d))
}

/// An engine formatted on `devs` with file system `bench` (2+1, no
/// reduction).
fn formatted(devs: Vec<Arc<dyn BlockDevice>>) -> Result<(Engine, u32), String> {
    let mut e = engine()?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.into_iter().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let fs = e
        .fs_create("bench", 2, 1, false, u64::MAX)
        .map_err(|e| e.to_string())?;
    Ok((e, fs))
}

/// Writes `mib` MiB in 1 MiB writes and syncs; reads them back. GB/s.
fn write_read(e: &Engine, fs: u32, name: &str, mib: u64) -> Result<(f64, f64, u64), String> {
    let ino = e.create(fs, name).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    for i in 0..mib {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        e.write(ino, i << 20, chunk.clone())
            .map_err(|e| e.to_string())?;
    }
    e.sync().map_err(|e| e.to_string())?;
    let w = (mib << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let r = read(e, ino, mib)?;
    Ok((w, r, ino))
}

fn read(e: &Engine, ino: u64, mib: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    for i in 0..mib {
        let d = e.read(ino, i << 20, 1 << 20).map_err(|e| e.to_string())?;
        if d.len() != 1 << 20 || d[..8] != i.to_le_bytes() {
            return Err(format!("MiB {i} read back wrong"));
        }
    }
    Ok((mib << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

/// Runs the benchmark.
pub fn main(mut a: Args) -> Result<(), String> {
    let mib = a.get("size-mib", 256u64)?;
    let json = a.flag("json");
    a.finish()?;
    let bytes = ((mib * 3) << 20).max(256 << 20);
    let dir = std::path::PathBuf::from(format!(
        "/dev/shm/flint-bench-slices-{}",
        std::process::id()
    ));
    let result = run(&dir, mib, bytes, json);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path, mib: u64, bytes: u64, json: bool) -> Result<(), String> {
    // Baseline: the engine on three local RAM devices, 2+1.
    let local = {
        let devs = ram(3, bytes)?;
        let (e, fs) = formatted(devs)?;
        let (w, r, _) = write_read(&e, fs, "seq", mib)?;
        (w, r)
    };

    let mut peers = (0..4)
        .map(|i| peer(&dir.join(format!("node{i}")), bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let epoch = Arc::new(AtomicU64::new(1));
    let devs = (0..3)
        .map(|i| remote(&peers[i], i, bytes, &epoch))
        .collect::<Result<Vec<_>, _>>()?;
    let (e, fs) = formatted(devs)?;
    let (rw, rr, ino) = write_read(&e, fs, "seq", mib)?;
    e.close().map_err(|e| e.to_string())?;

    // Node 0 stops; the next owner opens the slices left with a blank one
    // on node 3 in its place: degraded reads, then the rebuild.
    if let Some(s) = peers[0].server.take() {
        s.stop();
    }
    let epoch2 = Arc::new(AtomicU64::new(2));
    let slots = vec![
        Some(remote(&peers[3], 3, bytes, &epoch2)?),
        Some(remote(&peers[1], 1, bytes, &epoch2)?),
        Some(remote(&peers[2], 2, bytes, &epoch2)?),
    ];
    let mut next = engine()?;
    next.open(slots).map_err(|e| e.to_string())?;
    let degraded = read(&next, ino, mib)?;
    let t0 = Instant::now();
    let done = next
        .replace_device("node3", false)
        .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    let chunk = StoreConfig::default().chunk_size as f64;
    let rebuild = done.chunks as f64 * chunk / secs / 1e9;
    let after = read(&next, ino, mib)?;
    next.close().map_err(|e| e.to_string())?;
    drop(peers);
    let ev = evacuation(&dir.join("evac"), mib, bytes)?;

    if json {
        let v = serde_json::json!({"bench": "slices", "mib": mib,
            "local_write_gbps": local.0, "local_read_gbps": local.1,
            "remote_write_gbps": rw, "remote_read_gbps": rr,
            "degraded_read_gbps": degraded, "rebuild_gbps": rebuild,
            "rebuilt_chunks": done.chunks, "read_after_rebuild_gbps": after,
            "evac_healthy_read_gbps": ev.healthy, "evac_degraded_read_gbps": ev.degraded,
            "evac_read_during_gbps": ev.during, "evac_gbps": ev.rate,
            "evac_chunks": ev.chunks, "evac_busy_share": ev.busy_share});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "slices: an engine (2+1, no reduction) on 3 nodes' slices over loopback UDP (tmpfs), {mib} MiB in 1 MiB I/O, beside it on 3 local RAM devices"
    );
    let mut t = Table::new(&["what", "GB/s", "baseline", "ratio"]);
    let gb = |x: f64| format!("{x:.3}");
    t.row(vec![
        "1 MiB writes, durable (sync)".into(),
        gb(rw),
        format!("local {}", gb(local.0)),
        ratio(rw, local.0),
    ]);
    t.row(vec![
        "1 MiB reads".into(),
        gb(rr),
        format!("local {}", gb(local.1)),
        ratio(rr, local.1),
    ]);
    t.row(vec![
        "1 MiB reads, one node stopped (from parity)".into(),
        gb(degraded),
        format!("healthy {}", gb(rr)),
        ratio(degraded, rr),
    ]);
    t.row(vec![
        format!("rebuild onto a 4th node ({} chunks)", done.chunks),
        gb(rebuild),
        format!("healthy read {}", gb(rr)),
        ratio(rebuild, rr),
    ]);
    t.row(vec![
        "1 MiB reads after the rebuild".into(),
        gb(after),
        format!("healthy {}", gb(rr)),
        ratio(after, rr),
    ]);
    print!("{t}");
    println!(
        "rebuild onto the survivors: the engine on 4 nodes' slices (2+1 over 4), node 0 stopped, its {} chunks rebuilt onto the other 3 in paced steps (at most 25% of the reactor) while a reader reads the file over and over",
        ev.chunks
    );
    let mut t = Table::new(&["what", "GB/s", "baseline", "ratio"]);
    t.row(vec![
        "1 MiB reads while rebuilding".into(),
        gb(ev.during),
        format!("healthy {}", gb(ev.healthy)),
        ratio(ev.during, ev.healthy),
    ]);
    t.row(vec![
        "1 MiB reads while rebuilding".into(),
        gb(ev.during),
        format!("degraded {}", gb(ev.degraded)),
        ratio(ev.during, ev.degraded),
    ]);
    t.row(vec![
        format!(
            "rebuild onto survivors ({:.0}% of the time in steps)",
            ev.busy_share * 100.0
        ),
        gb(ev.rate),
        format!("healthy read {}", gb(ev.healthy)),
        ratio(ev.rate, ev.healthy),
    ]);
    print!("{t}");
    Ok(())
}

/// What the rebuild onto survivors measured.
struct Evac {
    healthy: f64,
    degraded: f64,
    during: f64,
    rate: f64,
    chunks: u64,
    busy_share: f64,
}

/// An engine on 4 nodes' slices (2+1) loses node 0 and is rebuilt onto
/// the other three, paced as a bucket host paces it, while a reader reads
/// the file over and over.
fn evacuation(dir: &std::path::Path, mib: u64, bytes: u64) -> Result<Evac, String> {
    use flint_engine::cluster::rebuild::{Rebuild, RebuildPolicy};
    let mut peers = (0..4)
        .map(|i| peer(&dir.join(format!("node{i}")), bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let epoch = Arc::new(AtomicU64::new(1));
    let devs = (0..4)
        .map(|i| remote_slice(&peers[i], i, "evac", bytes, &epoch))
        .collect::<Result<Vec<_>, _>>()?;
    let (e, fs) = formatted(devs)?;
    let (_, healthy, ino) = write_read(&e, fs, "seq", mib)?;
    e.close().map_err(|e| e.to_string())?;
    if let Some(s) = peers[0].server.take() {
        s.stop();
    }
    let epoch2 = Arc::new(AtomicU64::new(2));
    let mut slots = vec![None];
    for (i, p) in peers.iter().enumerate().skip(1) {
        slots.push(Some(remote_slice(p, i, "evac", bytes, &epoch2)?));
    }
    let mut next = engine()?;
    next.open(slots).map_err(|e| e.to_string())?;
    let degraded = read(&next, ino, mib)?;
    let next = Arc::new(next);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (e2, d2) = (next.clone(), done.clone());
    let rebuilder = std::thread::spawn(move || -> Result<(u64, f64, f64), String> {
        let mut rb = Rebuild::new(RebuildPolicy {
            grace: Duration::ZERO,
            ..RebuildPolicy::default()
        });
        let lost = std::collections::BTreeSet::from([0usize]);
        let t0 = Instant::now();
        while !rb.tick(&e2, &lost, false)? {
            std::thread::sleep(Duration::from_millis(1));
        }
        d2.store(true, std::sync::atomic::Ordering::Release);
        let h = rb.health(0);
        let secs = t0.elapsed().as_secs_f64();
        Ok((h.relocated_chunks, secs, h.busy_s / secs))
    });
    let t0 = Instant::now();
    let mut bytes_read = 0u64;
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        read(&next, ino, mib.min(8))?;
        bytes_read += mib.min(8) << 20;
    }
    let during = bytes_read as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let (chunks, secs, busy_share) = rebuilder.join().map_err(|_| "the rebuild panicked")??;
    let left = next.evacuate(0, false).map_err(|e| e.to_string())?;
    if !left.done() {
        return Err(format!("the rebuild left {left:?}"));
    }
    // Every stripe is whole without node 0: the file reads back.
    read(&next, ino, mib)?;
    match Arc::try_unwrap(next) {
        Ok(e) => e.close().map_err(|e| e.to_string())?,
        Err(_) => return Err("the engine is still shared".into()),
    }
    let chunk = StoreConfig::default().chunk_size as f64;
    Ok(Evac {
        healthy,
        degraded,
        during,
        rate: chunks as f64 * chunk / secs / 1e9,
        chunks,
        busy_share,
    })
}
