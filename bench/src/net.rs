//! `flint-bench net`: the data protocol on its two transports — DPDK over
//! `net_memif` and kernel UDP over loopback — served by the same node (a
//! child process: DPDK allows one EAL per process, so client and server
//! are two). Small-request RPC rate (a ping the server's receive side
//! answers), 4 KiB read throughput at QD32, and 4 KiB read round-trip
//! latency at QD1, each on both transports in the same run.

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

fn memif(role: &str, sock: &str) -> Result<DpdkPort, String> {
    let (ip, port) = if role == "server" {
        ([10, 9, 0, 1], 7400)
    } else {
        ([10, 9, 0, 2], 7401)
    };
    DpdkPort::open(DpdkConfig {
        eal_args: vec![
            "--no-pci".into(),
            format!("--file-prefix=flint-bench-{role}-{}", std::process::id()),
            format!("--vdev=net_memif0,role={role},socket={sock},socket-abstract=no"),
        ],
        ip: ip.into(),
        udp_port: port,
        mtu: 1500,
        ..DpdkConfig::default()
    })
    .map_err(|e| e.to_string())
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
    let s1 = Server::start(engine.clone(), udp, cfg.clone()).map_err(|e| e.to_string())?;
    println!("READY {} {ino} {udp_addr}", auth::key_to_hex(&org.key));
    let _ = std::io::stdout().flush();
    // The memif port comes up when the client connects; its queue is
    // polled by the node's reactor, as an appliance's are.
    let port = Arc::new(memif("server", sock)?);
    let queues = port
        .queues()
        .into_iter()
        .map(|q| (0usize, Arc::new(q) as Arc<dyn Port>))
        .collect();
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
    p50: u64,
    p99: u64,
}

fn pump(
    c: &mut Client,
    secs: f64,
    qd: usize,
    mut req: impl FnMut(&mut Rng) -> Request,
) -> Result<f64, String> {
    let mut rng = Rng::new(3);
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
    while c.in_flight() > 0 {
        c.poll(Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
    }
    Ok(rate)
}

fn measure(c: &mut Client, ino: u64, secs: f64) -> Result<Run, String> {
    let pings = pump(c, secs, 32, |_| Request::Ping {
        payload: vec![0; 32],
    })?;
    let read = |rng: &mut Rng| Request::Read {
        ino,
        offset: (rng.next() % 4096) * 4096,
        len: 4096,
    };
    let reads = pump(c, secs, 32, read)?;
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
    let udp = measure(&mut uc, ino, secs)?;
    drop(uc);
    let port = memif("client", &sock)?;
    let mut mc = Client::connect_via(
        Box::new(port),
        "10.9.0.1:7400".parse().expect("valid"),
        "bench",
        &key,
        cfg,
    )
    .map_err(|e| e.to_string())?;
    let dpdk = measure(&mut mc, ino, secs)?;
    drop(mc);
    if let Some(mut i) = child.stdin.take() {
        let _ = writeln!(i, "STOP");
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    if json {
        let v = serde_json::json!({"bench": "net",
            "udp_ping_rps": udp.pings, "dpdk_ping_rps": dpdk.pings,
            "udp_read_iops": udp.reads, "dpdk_read_iops": dpdk.reads,
            "udp_read_p50_us": udp.p50, "udp_read_p99_us": udp.p99,
            "dpdk_read_p50_us": dpdk.p50, "dpdk_read_p99_us": dpdk.p99});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("net: the data protocol, one client thread, one node (a separate process) serving both transports");
    let mut t = Table::new(&["measure", "kernel UDP (loopback)", "DPDK memif", "ratio"]);
    t.row(vec![
        "small RPC (ping, 32 B), QD32, req/s".into(),
        format!("{:.0}", udp.pings),
        format!("{:.0}", dpdk.pings),
        ratio(dpdk.pings, udp.pings),
    ]);
    t.row(vec![
        "4 KiB read, QD32, IOPS".into(),
        format!("{:.0}", udp.reads),
        format!("{:.0}", dpdk.reads),
        ratio(dpdk.reads, udp.reads),
    ]);
    t.row(vec![
        "4 KiB read round trip QD1, p50".into(),
        format!("{} us", udp.p50),
        format!("{} us", dpdk.p50),
        ratio(dpdk.p50 as f64, udp.p50 as f64),
    ]);
    t.row(vec![
        "4 KiB read round trip QD1, p99".into(),
        format!("{} us", udp.p99),
        format!("{} us", dpdk.p99),
        ratio(dpdk.p99 as f64, udp.p99 as f64),
    ]);
    print!("{t}");
    Ok(())
}
