//! `flint-bench net`: the data protocol on its two transports — DPDK over
//! `net_memif` and kernel UDP over loopback — served by the same node (a
//! child process: DPDK allows one EAL per process, so client and server
//! are two). Small-request RPC rate (a ping the server's receive side
//! answers), 4 KiB read throughput at QD32, and 4 KiB read round-trip
//! latency at QD1, each on both transports in the same run. Every rate is
//! also given per core: requests per CPU-second the client and the node
//! used together (both processes share this machine's cores). A second
//! memif link whose node side copies every frame into its mbuf (zero-copy
//! off) measures what sending answers from where they lie saves.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_dataplane::nic::dpdk::{DpdkConfig, DpdkPort};
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::nic::Port;
use flint_engine::net::auth;
use flint_engine::net::client::{Client, ClientConfig, ClientError};
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::net::wire::Request;
use hdrhistogram::Histogram;

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

const ROLE: &str = "FLINT_BENCH_NET_SERVER";
const FRAME: usize = 1472;

/// The memif links: port 0 (answers sent from where they lie) and port 1
/// (every frame copied into its mbuf), on sockets `<sock>0` and `<sock>1`.
fn memif(role: &str, sock: &str) -> Result<(DpdkPort, DpdkPort), String> {
    let (ip, port) = if role == "server" {
        ([10, 9, 0, 1], 7400)
    } else {
        ([10, 9, 0, 2], 7401)
    };
    let cfg = DpdkConfig {
        eal_args: vec![
            "--no-pci".into(),
            format!("--file-prefix=flint-bench-{role}-{}", std::process::id()),
            format!("--vdev=net_memif0,role={role},socket={sock}0,socket-abstract=no"),
            format!("--vdev=net_memif1,role={role},socket={sock}1,socket-abstract=no"),
            "--iova-mode=va".into(),
        ],
        ip: ip.into(),
        udp_port: port,
        mtu: 1500,
        // The node's ports listen before the client is told to connect;
        // the client waits for its links.
        link_wait: if role == "server" {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        },
        ..DpdkConfig::default()
    };
    let zc = DpdkPort::open(cfg.clone()).map_err(|e| e.to_string())?;
    let copy = DpdkPort::open_port(DpdkConfig {
        port: 1,
        zero_copy: false,
        ..cfg
    })
    .map_err(|e| e.to_string())?;
    Ok((zc, copy))
}

/// The server process: one engine, served on memif and on loopback UDP.
fn server(sock: &str) -> Result<(), String> {
    let (e, org, fs) = crate::remote::bench_node(3, 256 << 20, 1)?;
    let ino = e.create(fs, "data").map_err(|e| e.to_string())?;
    for i in 0..16u64 {
        e.write(ino, i << 20, vec![i as u8; 1 << 20])
            .map_err(|e| e.to_string())?;
    }
    e.sync().map_err(|e| e.to_string())?;
    let engine = Arc::new(e);
    let cfg = ServerConfig {
        max_frame: FRAME,
        ..ServerConfig::default()
    };
    let udp = Arc::new(
        UdpPort::bind("127.0.0.1:0".parse::<SocketAddr>().expect("valid"))
            .map_err(|e| e.to_string())?,
    );
    let udp_addr = udp.local_addr().map_err(|e| e.to_string())?;
    // Served as the appliance serves kernel UDP: the socket polled by a
    // reactor, which sleeps until it is readable.
    let s1 = Server::start_polled(engine.clone(), vec![(0, udp as Arc<dyn Port>)], cfg.clone())
        .map_err(|e| e.to_string())?;
    // The memif ports listen now and come up when the client connects;
    // their queues are polled by the node's reactors, as an appliance's are.
    let (zc, copy) = memif("server", sock)?;
    println!("READY {} {ino} {udp_addr}", auth::key_to_hex(&org.key));
    let _ = std::io::stdout().flush();
    let mut queues = Vec::new();
    for (r, p) in [zc, copy].into_iter().enumerate() {
        let p = Arc::new(p);
        for q in p.queues() {
            queues.push((r % engine.reactor_count(), Arc::new(q) as Arc<dyn Port>));
        }
    }
    let s2 = Server::start_polled(engine, queues, cfg).map_err(|e| e.to_string())?;
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    s2.stop();
    s1.stop();
    Ok(())
}

struct Run {
    pings: f64,
    reads: f64,
    /// The same per CPU-second of both processes.
    pings_per_core: f64,
    reads_per_core: f64,
    /// 64 KiB reads at QD8: bytes per second, and per CPU-second.
    big: f64,
    big_per_core: f64,
    p50: u64,
    p99: u64,
}

/// User + system CPU seconds process `pid` has used (from /proc).
pub fn cpu_time_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// CPU seconds used so far by this process and the node.
fn cpu_both(node: u32) -> f64 {
    crate::report::cpu_time() + cpu_time_of(node)
}

/// Requests per second, and per CPU-second of both processes.
fn pump(
    c: &mut Client,
    node: u32,
    secs: f64,
    qd: usize,
    mut req: impl FnMut(&mut Rng) -> Request,
) -> Result<(f64, f64), String> {
    let mut rng = Rng::new(3);
    let cpu0 = cpu_both(node);
    let mut idle: Vec<u64> = (0..qd as u64).collect();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        while let Some(&tag) = idle.last() {
            match c.submit(&req(&mut rng), tag) {
                Ok(()) => {
                    idle.pop();
                }
                Err(ClientError::Busy) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        for d in c
            .poll(Duration::from_millis(50))
            .map_err(|e| e.to_string())?
        {
            if d.status < 0 {
                return Err(format!("request failed: {}", d.status));
            }
            n += 1;
            idle.push(d.tag);
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let per_core = n as f64 / (cpu_both(node) - cpu0).max(1e-3);
    while c.in_flight() > 0 {
        c.poll(Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
    }
    Ok((rate, per_core))
}

fn measure(c: &mut Client, node: u32, ino: u64, secs: f64) -> Result<Run, String> {
    let (pings, pings_per_core) = pump(c, node, secs, 32, |_| Request::Ping {
        payload: vec![0; 32],
    })?;
    let read = |rng: &mut Rng| Request::Read {
        ino,
        offset: (rng.next() % 4096) * 4096,
        len: 4096,
    };
    let (reads, reads_per_core) = pump(c, node, secs, 32, read)?;
    let big_read = |rng: &mut Rng| Request::Read {
        ino,
        offset: (rng.next() % 256) * 65536,
        len: 65536,
    };
    let (big, big_per_core) = pump(c, node, secs, 8, big_read)?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 2).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(9);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let off = (rng.next() % 4096) * 4096;
        c.read(ino, off, 4096).map_err(|e| e.to_string())?;
        let _ = h.record(t.elapsed().as_nanos() as u64 / 1000);
    }
    Ok(Run {
        pings,
        reads,
        pings_per_core,
        reads_per_core,
        big: big * 65536.0,
        big_per_core: big_per_core * 65536.0,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    })
}

/// `flint-bench net`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 2.0f64)?;
    let json = a.flag("json");
    a.finish()?;
    if let Ok(sock) = std::env::var(ROLE) {
        return server(&sock);
    }
    let dir = std::env::temp_dir().join(format!("flint-bench-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sock = dir.join("memif.sock").display().to_string();
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["net"])
        .env(ROLE, &sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 4 || f[0] != "READY" {
        return Err(format!("the server process failed: {line}"));
    }
    let key = auth::key_from_hex(f[1]).ok_or("bad key from the server")?;
    let ino: u64 = f[2].parse().map_err(|_| "bad ino")?;
    let udp_addr: SocketAddr = f[3].parse().map_err(|_| "bad address")?;
    let cfg = ClientConfig {
        max_frame: FRAME,
        ..ClientConfig::default()
    };
    let mut uc =
        Client::connect(udp_addr, "bench", &key, cfg.clone()).map_err(|e| e.to_string())?;
    let node = child.id();
    let udp = measure(&mut uc, node, ino, secs)?;
    drop(uc);
    let (zc, copy) = memif("client", &sock)?;
    let server: SocketAddr = "10.9.0.1:7400".parse().expect("valid");
    // The copying link first: the two DPDK runs are not favoured by order
    // (caches and the node warm up in the first).
    let mut cc = Client::connect_via(
        Box::new(copy.first_queue()),
        server,
        "bench",
        &key,
        cfg.clone(),
    )
    .map_err(|e| e.to_string())?;
    let copied = measure(&mut cc, node, ino, secs)?;
    drop(cc);
    let mut mc = Client::connect_via(Box::new(zc.first_queue()), server, "bench", &key, cfg)
        .map_err(|e| e.to_string())?;
    let dpdk = measure(&mut mc, node, ino, secs)?;
    drop(mc);
    if let Some(mut i) = child.stdin.take() {
        let _ = writeln!(i, "STOP");
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    if json {
        let v = serde_json::json!({"bench": "net",
            "udp_ping_rps": udp.pings, "dpdk_ping_rps": dpdk.pings,
            "udp_ping_per_core": udp.pings_per_core, "dpdk_ping_per_core": dpdk.pings_per_core,
            "udp_read_iops": udp.reads, "dpdk_read_iops": dpdk.reads,
            "udp_read_per_core": udp.reads_per_core, "dpdk_read_per_core": dpdk.reads_per_core,
            "dpdk_copy_read_iops": copied.reads, "dpdk_copy_read_per_core": copied.reads_per_core,
            "udp_64k_read_bps": udp.big, "dpdk_64k_read_bps": dpdk.big,
            "dpdk_copy_64k_read_bps": copied.big,
            "udp_64k_read_per_core": udp.big_per_core, "dpdk_64k_read_per_core": dpdk.big_per_core,
            "dpdk_copy_64k_read_per_core": copied.big_per_core,
            "udp_read_p50_us": udp.p50, "udp_read_p99_us": udp.p99,
            "dpdk_read_p50_us": dpdk.p50, "dpdk_read_p99_us": dpdk.p99,
            "dpdk_copy_read_p50_us": copied.p50, "dpdk_copy_read_p99_us": copied.p99});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("net: the data protocol, one client thread, one node (a separate process) serving both transports");
    println!("(per core: requests per CPU-second of client and node together)");
    let mut t = Table::new(&["measure", "kernel UDP (loopback)", "DPDK memif", "ratio"]);
    let rate = |a: f64, b: f64| vec![format!("{a:.0}"), format!("{b:.0}"), ratio(b, a)];
    let mbs = |a: f64, b: f64| {
        vec![
            format!("{:.0} MB/s", a / 1e6),
            format!("{:.0} MB/s", b / 1e6),
            ratio(b, a),
        ]
    };
    let us = |a: u64, b: u64| {
        vec![
            format!("{a} us"),
            format!("{b} us"),
            ratio(b as f64, a as f64),
        ]
    };
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "small RPC (ping, 32 B), QD32, req/s",
            rate(udp.pings, dpdk.pings),
        ),
        ("  per core", rate(udp.pings_per_core, dpdk.pings_per_core)),
        ("4 KiB read, QD32, IOPS", rate(udp.reads, dpdk.reads)),
        ("  per core", rate(udp.reads_per_core, dpdk.reads_per_core)),
        ("64 KiB read, QD8", mbs(udp.big, dpdk.big)),
        ("  per core", mbs(udp.big_per_core, dpdk.big_per_core)),
        ("4 KiB read round trip QD1, p50", us(udp.p50, dpdk.p50)),
        ("4 KiB read round trip QD1, p99", us(udp.p99, dpdk.p99)),
    ];
    for (name, cells) in rows {
        t.row(std::iter::once(name.to_string()).chain(cells).collect());
    }
    print!("{t}");
    println!(
        "DPDK answers sent from where they lie vs copied into mbufs (same node, second memif link)"
    );
    let mut z = Table::new(&["measure", "copied", "zero-copy", "ratio"]);
    for (name, cells) in [
        ("4 KiB read, QD32, IOPS", rate(copied.reads, dpdk.reads)),
        (
            "  per core",
            rate(copied.reads_per_core, dpdk.reads_per_core),
        ),
        ("64 KiB read, QD8", mbs(copied.big, dpdk.big)),
        ("  per core", mbs(copied.big_per_core, dpdk.big_per_core)),
        ("4 KiB read round trip QD1, p50", us(copied.p50, dpdk.p50)),
        ("4 KiB read round trip QD1, p99", us(copied.p99, dpdk.p99)),
    ] {
        z.row(std::iter::once(name.to_string()).chain(cells).collect());
    }
    print!("{z}");
    Ok(())
}
