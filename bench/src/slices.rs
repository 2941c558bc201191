//! `flint-bench slices`: an engine whose devices are slices on peer nodes
//! (in-process data-protocol servers over loopback UDP, their slices on
//! tmpfs), beside the same engine on local RAM devices: 1 MiB writes made
//! durable and 1 MiB reads, healthy and with one node stopped (reads from
//! parity), and the rebuild of the lost node's chunks onto a fourth node
//! beside the healthy read rate.

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
    let addr = p.server.as_ref().ok_or("the node is stopped")?.addr();
    let d = RemoteDevice::open(RemoteSpec {
        name: format!("node{i}"),
        peer: addr,
        slice: "bench".into(),
        bytes,
        org: ORG.into(),
        key: KEY,
        epoch: epoch.clone(),
        timeout: Duration::from_millis(500),
    })
    .map_err(|e| format!("node {i}: {e}"))?;
    Ok(Arc::new(d))
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
        let mut e = engine()?;
        e.format(devs.clone(), StoreConfig::default(), true)
            .map_err(|e| e.to_string())?;
        e.open(devs.into_iter().map(Some).collect())
            .map_err(|e| e.to_string())?;
        let fs = e
            .fs_create("bench", 2, 1, false, u64::MAX)
            .map_err(|e| e.to_string())?;
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
    let mut e = engine()?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.into_iter().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let fs = e
        .fs_create("bench", 2, 1, false, u64::MAX)
        .map_err(|e| e.to_string())?;
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

    if json {
        let v = serde_json::json!({"bench": "slices", "mib": mib,
            "local_write_gbps": local.0, "local_read_gbps": local.1,
            "remote_write_gbps": rw, "remote_read_gbps": rr,
            "degraded_read_gbps": degraded, "rebuild_gbps": rebuild,
            "rebuilt_chunks": done.chunks, "read_after_rebuild_gbps": after});
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
    Ok(())
}
