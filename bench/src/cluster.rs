//! `flint-bench cluster`: the aggregate rate of a running cluster's buckets
//! (or of one node's own file system, the one-node baseline), with a client
//! thread per bucket so the load spreads over every node: 1 MiB sequential
//! writes (made durable) and reads, then 4 KiB random reads and writes at a
//! queue depth, all clients at once. Beside each figure, the CPU seconds
//! the nodes' processes and the client spent meanwhile, and the figure per
//! CPU-second (on a machine whose cores every node shares, the absolute
//! figures cannot grow with nodes; the work per CPU-second shows what each
//! node costs). `scripts/cluster-bench.sh` runs it on clusters of 1, 2, 4
//! and 6 nodes and prints each figure as a ratio to one node.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use flint_engine::cluster::etcd::Etcd;
use flint_engine::cluster::keys::{ClusterDoc, Keys};
use flint_engine::cluster::kv::Kv;
use flint_engine::net::client::{Client, ClientConfig};

use crate::args::Args;
use crate::remote::{random_io, seq_pass};
use crate::report::Table;

/// The phases, in order: (name, unit).
const PHASES: [(&str, &str); 4] = [
    ("1 MiB writes, durable", "GB/s"),
    ("1 MiB reads", "GB/s"),
    ("4 KiB random reads", "IOPS"),
    ("4 KiB random writes", "IOPS"),
];

/// CPU seconds `pids` (and this process) have used.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let one = |path: String| -> f64 {
        let Ok(s) = std::fs::read_to_string(path) else {
            return 0.0;
        };
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (t(11) + t(12)) / tick
    };
    pids.iter()
        .map(|p| one(format!("/proc/{p}/stat")))
        .sum::<f64>()
        + one("/proc/self/stat".into())
}

/// The buckets' addresses, from etcd.
fn buckets(etcd: &str, cluster: &str) -> Result<(Vec<SocketAddr>, ClusterDoc), String> {
    let eps: Vec<String> = etcd.split(',').map(str::to_string).collect();
    let mut kv = Etcd::new(&eps, Duration::from_secs(3));
    let keys = Keys::new(cluster);
    let r = kv.range(&keys.config(), false).map_err(|e| e.to_string())?;
    let doc: ClusterDoc = r
        .kvs
        .first()
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .ok_or_else(|| format!("cluster {cluster} is not created"))?;
    if doc.k == 0 {
        return Err(format!("cluster {cluster} has no buckets"));
    }
    let mut out = Vec::new();
    for s in 0..doc.shards {
        let r = kv
            .range(&keys.bucket(s), false)
            .map_err(|e| e.to_string())?;
        let addr = r
            .kvs
            .first()
            .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
            .ok_or_else(|| format!("bucket {s} is not served yet"))?;
        out.push(addr);
    }
    Ok((out, doc))
}

/// Runs the benchmark.
pub fn main(mut a: Args) -> Result<(), String> {
    let etcd: String = a.get("etcd", String::new())?;
    let cluster: String = a.get("cluster", "flint".to_string())?;
    let targets: String = a.get("targets", String::new())?;
    let clients = a.get("clients", 4usize)?;
    let org: String = a.get("org", "default".to_string())?;
    let fs: String = a.get("fs", "default".to_string())?;
    let key_file: String = a.get("key-file", String::new())?;
    let pids: String = a.get("pids", String::new())?;
    let secs = a.get("time", 3.0f64)?;
    let qd = a.get("qd", 8usize)?;
    let mib = a.get("size-mib", 16u64)?;
    let json = a.flag("json");
    a.finish()?;
    let text =
        std::fs::read_to_string(&key_file).map_err(|e| format!("--key-file `{key_file}`: {e}"))?;
    let key = flint_engine::net::auth::key_from_hex(text.trim())
        .ok_or_else(|| format!("{key_file}: not 64 hex digits"))?;
    let pids: Vec<u32> = pids
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| format!("--pids: `{p}` is not a pid")))
        .collect::<Result<_, _>>()?;
    // Where the clients go: one per bucket, or `clients` to the targets.
    let (addrs, what) = if !etcd.is_empty() {
        let (b, doc) = buckets(&etcd, &cluster)?;
        let what = format!("{} buckets of {}+{}", b.len(), doc.k, doc.m);
        (b, what)
    } else {
        let t: Vec<SocketAddr> = targets
            .split(',')
            .map(|t| {
                t.parse()
                    .map_err(|_| format!("--targets: `{t}` is not an address"))
            })
            .collect::<Result<_, _>>()?;
        if t.is_empty() {
            return Err("give --etcd (a cluster's buckets) or --targets ADDR,...".into());
        }
        let spread: Vec<SocketAddr> = (0..clients.max(1)).map(|i| t[i % t.len()]).collect();
        (spread, format!("file system {fs} of {} node(s)", t.len()))
    };
    let n = addrs.len();
    let start = Arc::new(Barrier::new(n + 1));
    let mut threads = Vec::new();
    for (i, addr) in addrs.into_iter().enumerate() {
        let (start, org, fs) = (start.clone(), org.clone(), fs.clone());
        threads.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
            let setup = Client::connect(addr, &org, &key, ClientConfig::default())
                .map_err(|e| format!("{addr}: {e}"))
                .and_then(|mut c| {
                    let name = format!("bench-{}-{i}", std::process::id());
                    let (ino, _) = c.open(&fs, &name, true).map_err(|e| e.to_string())?;
                    Ok((c, ino))
                });
            start.wait();
            // Every barrier is met even after an error, so no one waits.
            let mut failed = setup.as_ref().err().cloned();
            let mut out = Vec::new();
            let mut setup = setup.ok();
            for (p, (phase, _)) in PHASES.iter().enumerate() {
                let r = match (&mut setup, &failed) {
                    (Some((c, ino)), None) => {
                        let ino = *ino;
                        match p {
                            0 => seq_pass(c, ino, mib, 4, true).map(|_| (mib << 20) as f64),
                            1 => seq_pass(c, ino, mib, 4, false).map(|_| (mib << 20) as f64),
                            2 => random_io(c, ino, mib * 256, qd, secs, false).map(|f| f.iops),
                            _ => random_io(c, ino, mib * 256, qd, secs, true).map(|f| f.iops),
                        }
                    }
                    _ => Ok(0.0),
                };
                start.wait();
                match r {
                    Ok(v) => out.push(v),
                    Err(e) => failed = failed.or(Some(format!("{addr}: {phase}: {e}"))),
                }
                start.wait();
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }));
    }
    start.wait();
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in PHASES {
        let (t0, c0) = (Instant::now(), cpu_seconds(&pids));
        start.wait();
        wall.push(t0.elapsed().as_secs_f64());
        cpu.push(cpu_seconds(&pids) - c0);
        start.wait();
    }
    let mut sums = [0.0f64; 4];
    for t in threads {
        let r = t.join().map_err(|_| "a client panicked")??;
        for (s, v) in sums.iter_mut().zip(r) {
            *s += v;
        }
    }
    // Sequential phases: bytes over the phase's wall time; random phases:
    // every client's rate over the same seconds, summed.
    let figures = [
        sums[0] / wall[0] / 1e9,
        sums[1] / wall[1] / 1e9,
        sums[2],
        sums[3],
    ];
    if json {
        let v = serde_json::json!({
            "bench": "cluster", "what": what, "clients": n, "qd": qd, "mib": mib,
            "seq_write_gbps": figures[0], "seq_read_gbps": figures[1],
            "rand_read_iops": figures[2], "rand_write_iops": figures[3],
            "cpu_s": cpu, "wall_s": wall,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "cluster: {what}, {n} clients at once ({mib} MiB each; 4 KiB at QD{qd} for {secs} s), CPU of {} node processes and the client",
        pids.len()
    );
    let mut t = Table::new(&["what", "aggregate", "CPU s", "per CPU-second"]);
    for (p, (name, unit)) in PHASES.iter().enumerate() {
        let per = figures[p] * wall[p] / cpu[p].max(1e-9);
        let (agg, each) = if *unit == "GB/s" {
            (format!("{:.3} GB/s", figures[p]), format!("{per:.3} GB"))
        } else {
            (format!("{:.0} IOPS", figures[p]), format!("{per:.0} ops"))
        };
        t.row(vec![name.to_string(), agg, format!("{:.2}", cpu[p]), each]);
    }
    print!("{t}");
    Ok(())
}
