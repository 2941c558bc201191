//! The data protocol over DPDK (feature `dpdk`), on the closest real things
//! these machines have: two processes over `net_memif` (server and client
//! both DPDK, with loss injected on the client's path), and a DPDK server
//! on `net_af_packet` bound to a veth in one network namespace answering a
//! kernel-UDP client in another (the same frames on both transports).
//! Clear errors too: a second EAL initialisation, a port that does not
//! exist, more queues than the device has.

#![cfg(feature = "dpdk")]

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::nic::dpdk::{DpdkConfig, DpdkPort, Hugepages};
use flint_dataplane::nic::lossy::LossyPort;
use flint_dataplane::nic::Port;
use flint_engine::net::auth;
use flint_engine::net::client::{Client, ClientConfig};
use flint_engine::net::server::{Server, ServerConfig};

const ROLE: &str = "FLINT_DPDK_ROLE";
/// The veth pair's MTU in the af_packet test: jumbo frames end to end.
const JUMBO: u16 = 9000;

/// A node serving an in-memory engine on `port`; prints `READY <key>`,
/// and its counters when told to stop (`zero_copy`: the port's frames sent
/// from where their payload lay).
fn serve(port: Arc<dyn Port>, frame: usize, zero_copy: impl Fn() -> u64) -> ! {
    let (e, key) = common::org_node("net");
    let srv = Server::start(
        Arc::new(e),
        port,
        ServerConfig {
            max_frame: frame,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    println!("READY {}", auth::key_to_hex(&key));
    // Serve until the parent closes stdin or says STOP; then report.
    let mut line = String::new();
    let stdin = std::io::stdin();
    while stdin.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line.trim() != "STOP" {
        line.clear();
    }
    let n = |k: &str| {
        srv.counters()
            .snapshot()
            .into_iter()
            .find(|(name, _)| *name == k)
            .map_or(0, |(_, v)| v)
    };
    println!(
        "COUNTERS malformed={} requests={} zero_copy={}",
        n("malformed"),
        n("requests"),
        zero_copy()
    );
    srv.stop();
    std::process::exit(0);
}

/// [`serve`] on a DPDK port's first queue, counting its zero-copy frames.
fn serve_dpdk(p: DpdkPort) -> ! {
    let q = p.first_queue();
    let port = q.port().clone();
    serve(Arc::new(q), port.max_frame(), move || {
        port.stats.tx_zero_copy.load(Ordering::Relaxed)
    })
}

/// The value of `name=N` in a `COUNTERS` line.
fn counter(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// A client's workload: a file written in many packets and read back.
fn workload(c: &mut Client) {
    let (ino, _) = c.open("data", "over-dpdk", true).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    c.write(ino, 0, &data).unwrap();
    c.sync().unwrap();
    assert!(c.read(ino, 0, data.len()).unwrap() == data);
    for i in 0..50u64 {
        c.write(ino, i * 4096, &[i as u8; 4096]).unwrap();
        assert_eq!(c.read(ino, i * 4096, 4096).unwrap(), vec![i as u8; 4096]);
    }
    println!(
        "OK retransmits={} frame={}",
        c.stats().retransmits,
        c.max_frame()
    );
}

fn memif(role: &str, sock: &str) -> DpdkPort {
    memif_queues(role, sock, 1)
}

fn memif_queues(role: &str, sock: &str, queues: u16) -> DpdkPort {
    let (ip, udp) = if role == "server" {
        (Ipv4Addr::new(10, 9, 0, 1), 7400)
    } else {
        (Ipv4Addr::new(10, 9, 0, 2), 7401)
    };
    DpdkPort::open(DpdkConfig {
        eal_args: vec![
            "--no-pci".into(),
            format!("--file-prefix=flint-{role}-{}", std::process::id()),
            format!("--vdev=net_memif0,role={role},socket={sock},socket-abstract=no"),
            "-l".into(),
            "0".into(),
        ],
        ip,
        udp_port: udp,
        mtu: 1500,
        queues,
        ..DpdkConfig::default()
    })
    .unwrap()
}

fn child(test: &str, env: &[(&str, String)], netns: Option<&str>) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's lines until one starts with `prefix`.
fn wait_line(c: &mut std::process::Child, prefix: &str) -> String {
    use std::io::Read;
    let out = c.stdout.as_mut().unwrap();
    loop {
        // Byte by byte, so nothing is left buffered for the next call.
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match out.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => line.push(b[0]),
                _ => panic!("child ended before printing {prefix}"),
            }
        }
        let line = String::from_utf8_lossy(&line).to_string();
        // (The harness's "test <name> ... " may precede the first line.)
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim().to_string();
        }
    }
}

#[test]
fn server_and_client_over_memif_recover_injected_loss() {
    let test = "server_and_client_over_memif_recover_injected_loss";
    match std::env::var(ROLE).as_deref() {
        Ok("server") => serve_dpdk(memif("server", &std::env::var("FLINT_DPDK_SOCK").unwrap())),
        Ok("client") => {
            let p = memif("client", &std::env::var("FLINT_DPDK_SOCK").unwrap()).first_queue();
            let frame = p.port().max_frame();
            let key = auth::key_from_hex(&std::env::var("FLINT_DPDK_KEY").unwrap()).unwrap();
            // Every 7th frame the client sends is dropped on the path.
            let lossy = Box::new(LossyPort::new(p, 7));
            let server: SocketAddr = "10.9.0.1:7400".parse().unwrap();
            let cfg = ClientConfig {
                max_frame: frame,
                ..ClientConfig::default()
            };
            let mut c = Client::connect_via(lossy, server, "net", &key, cfg).unwrap();
            workload(&mut c);
            assert!(c.stats().retransmits > 0);
            std::process::exit(0);
        }
        _ => {}
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("memif.sock").display().to_string();
    let mut srv = child(
        test,
        &[(ROLE, "server".into()), ("FLINT_DPDK_SOCK", sock.clone())],
        None,
    );
    let key = wait_line(&mut srv, "READY");
    let mut cli = child(
        test,
        &[
            (ROLE, "client".into()),
            ("FLINT_DPDK_SOCK", sock),
            ("FLINT_DPDK_KEY", key),
        ],
        None,
    );
    let ok = wait_line(&mut cli, "OK");
    assert!(cli.wait().unwrap().success());
    drop(srv.stdin.take());
    let counters = wait_line(&mut srv, "COUNTERS");
    let _ = srv.wait();
    // The answers' data left from where the engine returned it: chained
    // external-buffer mbufs, not copies (retransmitted answers too).
    assert!(counter(&counters, "zero_copy") > 0, "{counters}");
    eprintln!("memif: {ok}; server {counters}");
}

#[test]
fn kernel_udp_client_talks_to_a_dpdk_server_on_af_packet() {
    let test = "kernel_udp_client_talks_to_a_dpdk_server_on_af_packet";
    match std::env::var(ROLE).as_deref() {
        Ok("afp-server") => {
            let p = DpdkPort::open(DpdkConfig {
                eal_args: vec![
                    "--no-pci".into(),
                    format!("--file-prefix=flint-afp-{}", std::process::id()),
                    format!(
                        "--vdev=net_af_packet0,iface={},framesz=10240,blocksz=20480",
                        std::env::var("FLINT_DPDK_IF").unwrap()
                    ),
                    "-l".into(),
                    "0".into(),
                ],
                ip: Ipv4Addr::new(10, 78, 0, 2),
                udp_port: 7400,
                mtu: JUMBO,
                ..DpdkConfig::default()
            })
            .unwrap();
            serve_dpdk(p)
        }
        Ok("udp-server") => {
            let p = flint_dataplane::nic::udp::UdpPort::bind("10.78.0.2:7400".parse().unwrap())
                .unwrap();
            serve(Arc::new(p), usize::from(JUMBO) - 28, || 0)
        }
        Ok("afp-client") => {
            let p = DpdkPort::open(DpdkConfig {
                eal_args: vec![
                    "--no-pci".into(),
                    format!("--file-prefix=flint-afc-{}", std::process::id()),
                    format!(
                        "--vdev=net_af_packet0,iface={},framesz=10240,blocksz=20480",
                        std::env::var("FLINT_DPDK_IF").unwrap()
                    ),
                    "-l".into(),
                    "0".into(),
                ],
                ip: Ipv4Addr::new(10, 78, 0, 3),
                udp_port: 7401,
                mtu: JUMBO,
                ..DpdkConfig::default()
            })
            .unwrap();
            let key = auth::key_from_hex(&std::env::var("FLINT_DPDK_KEY").unwrap()).unwrap();
            let cfg = ClientConfig {
                max_frame: p.max_frame(),
                ..ClientConfig::default()
            };
            let server = "10.78.0.2:7400".parse().unwrap();
            let mut c =
                Client::connect_via(Box::new(p.first_queue()), server, "net", &key, cfg).unwrap();
            workload(&mut c);
            std::process::exit(0);
        }
        Ok("udp-client") => {
            let key = auth::key_from_hex(&std::env::var("FLINT_DPDK_KEY").unwrap()).unwrap();
            // Malformed datagrams first: the server drops and counts them.
            let junk = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
            for i in 0..200u32 {
                let _ = junk.send_to(&i.to_le_bytes().repeat(20), "10.78.0.2:7400");
            }
            // Jumbo frames: 8972-byte datagrams on a 9000-byte MTU.
            let cfg = ClientConfig {
                max_frame: usize::from(JUMBO) - 28,
                ..ClientConfig::default()
            };
            let mut c =
                Client::connect("10.78.0.2:7400".parse().unwrap(), "net", &key, cfg).unwrap();
            workload(&mut c);
            std::process::exit(0);
        }
        _ => {}
    }
    let id = std::process::id();
    let (a, b) = (format!("flint-a-{id}"), format!("flint-b-{id}"));
    let sh = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "`{args}` failed (needs root and iproute2)");
    };
    sh(&format!("ip netns add {a} && ip netns add {b}"));
    let cleanup = format!("ip netns del {a}; ip netns del {b}");
    let r = std::panic::catch_unwind(|| {
        sh(&format!(
            "ip link add fva{id} netns {a} type veth peer name fvb{id} netns {b} && \
             ip -n {a} link set fva{id} up mtu {JUMBO} && ip -n {b} link set fvb{id} up mtu {JUMBO} && \
             ip -n {a} link set lo up && ip -n {a} addr add 10.78.0.1/24 dev fva{id}"
        ));
        let mut srv = child(
            test,
            &[
                (ROLE, "afp-server".into()),
                ("FLINT_DPDK_IF", format!("fvb{id}")),
            ],
            Some(&b),
        );
        let key = wait_line(&mut srv, "READY");
        let mut cli = child(
            test,
            &[(ROLE, "udp-client".into()), ("FLINT_DPDK_KEY", key)],
            Some(&a),
        );
        let ok = wait_line(&mut cli, "OK");
        assert!(cli.wait().unwrap().success());
        writeln!(srv.stdin.as_mut().unwrap(), "STOP").unwrap();
        let counters = wait_line(&mut srv, "COUNTERS");
        assert!(counter(&counters, "malformed") >= 200, "{counters}");
        // Jumbo answers left from where the engine returned them.
        assert!(counter(&counters, "zero_copy") > 0, "{counters}");
        let _ = srv.wait();
        assert!(ok.contains("frame=8972"), "jumbo frames: {ok}");
        eprintln!("af_packet, kernel client -> DPDK server: {ok}; {counters}");

        // The reverse: a DPDK client on af_packet, a kernel-UDP server.
        sh(&format!("ip -n {b} addr add 10.78.0.2/24 dev fvb{id}"));
        let mut srv = child(test, &[(ROLE, "udp-server".into())], Some(&b));
        let key = wait_line(&mut srv, "READY");
        let mut cli = child(
            test,
            &[
                (ROLE, "afp-client".into()),
                ("FLINT_DPDK_IF", format!("fva{id}")),
                ("FLINT_DPDK_KEY", key),
            ],
            Some(&a),
        );
        let ok = wait_line(&mut cli, "OK");
        assert!(cli.wait().unwrap().success());
        drop(srv.stdin.take());
        let _ = srv.wait();
        assert!(ok.contains("frame=8972"), "jumbo frames: {ok}");
        eprintln!("af_packet, DPDK client -> kernel server: {ok}");
    });
    let _ = Command::new("sh").arg("-c").arg(&cleanup).status();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn dpdk_errors_are_clear() {
    let test = "dpdk_errors_are_clear";
    if std::env::var(ROLE).as_deref() == Ok("errors") {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock").display().to_string();
        let base = vec![
            "--no-pci".to_string(),
            format!("--file-prefix=flint-err-{}", std::process::id()),
            format!("--vdev=net_memif0,role=server,socket={sock},socket-abstract=no"),
            "-l".into(),
            "0".into(),
        ];
        flint_dataplane::nic::dpdk::eal_init(&base, Hugepages::Auto).unwrap();
        let again = flint_dataplane::nic::dpdk::eal_init(&base, Hugepages::Auto).unwrap_err();
        assert!(again.to_string().contains("already initialised"), "{again}");
        let missing = DpdkPort::open_port(DpdkConfig {
            port: 5,
            ..DpdkConfig::default()
        })
        .err()
        .unwrap();
        assert!(missing.to_string().contains("no DPDK port 5"), "{missing}");
        let queues = DpdkPort::open_port(DpdkConfig {
            queues: 1000,
            ..DpdkConfig::default()
        })
        .err()
        .unwrap();
        assert!(queues.to_string().contains("1000 asked for"), "{queues}");
        println!("OK");
        std::process::exit(0);
    }
    let mut c = child(test, &[(ROLE, "errors".into())], None);
    wait_line(&mut c, "OK");
    assert!(c.wait().unwrap().success());
}

/// A `flint serve` child, killed if the test fails before stopping it (a
/// node keeps polling its queues after its parent is gone).
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        // Already waited for: std sends nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An appliance config whose data transport is DPDK on `vdev`.
fn appliance_config(dir: &std::path::Path, vdev: &str, fallback: bool) -> std::path::PathBuf {
    let mgmt = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut t = format!(
        "[reactor]\npin = false\n[engine]\njournal_blocks = 1024\ncheckpoint_blocks = 1024\n\
         [server]\ndata_addr = \"127.0.0.1:{data}\"\nmgmt_addr = \"127.0.0.1:{mgmt}\"\ntransport = \"dpdk\"\n\
         [dpdk]\nvdevs = [\"{vdev}\"]\nfile_prefix = \"flint-app-{}\"\nip = \"10.9.0.1\"\nmtu = 1500\n\
         fallback_to_udp = {fallback}\n\
         [[org]]\nname = \"net\"\nkey_file = \"{d}/net.key\"\n\
         [[filesystem]]\nname = \"data\"\nk = 2\nm = 1\ncapacity = \"1GiB\"\norg = \"net\"\n",
        std::process::id(),
        d = dir.display()
    );
    for i in 0..3 {
        t += &format!("[[device]]\nname = \"m{i}\"\nbackend = \"memory\"\nsize = \"64MiB\"\n");
    }
    let p = dir.join("node.toml");
    std::fs::write(&p, t).unwrap();
    p
}

#[test]
fn the_appliance_serves_over_dpdk_and_falls_back_only_when_asked() {
    if std::env::var(ROLE).as_deref() == Ok("app-client") {
        // Two sessions, one on each queue pair when there are two (memif
        // pairs queue i with queue i), both on the one queue otherwise.
        let queues: u16 = std::env::var("FLINT_DPDK_QUEUES").unwrap().parse().unwrap();
        let p = Arc::new(memif_queues(
            "client",
            &std::env::var("FLINT_DPDK_SOCK").unwrap(),
            queues,
        ));
        let frame = p.max_frame();
        let key = auth::key_from_hex(&std::env::var("FLINT_DPDK_KEY").unwrap()).unwrap();
        let qs = p.queues();
        for q in qs.into_iter().cycle().take(2) {
            let cfg = ClientConfig {
                max_frame: frame,
                timeout: Duration::from_secs(5),
                ..ClientConfig::default()
            };
            let server = "10.9.0.1:7400".parse().unwrap();
            let mut c = Client::connect_via(Box::new(q), server, "net", &key, cfg).unwrap();
            workload(&mut c);
        }
        std::process::exit(0);
    }
    let flint = env!("CARGO_BIN_EXE_flint");
    let dir = tempfile::tempdir().unwrap();
    // A vdev DPDK does not know: a clear error, no silent fallback.
    let bad = appliance_config(dir.path(), "net_nosuchpmd0", false);
    let out = Command::new(flint)
        .arg("--config")
        .arg(&bad)
        .args(["serve", "--init"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("dpdk") && err.contains("fallback_to_udp"),
        "{err}"
    );
    // Asked to fall back: it serves on kernel UDP.
    let fb = appliance_config(dir.path(), "net_nosuchpmd0", true);
    let mut node = Command::new(flint)
        .arg("--config")
        .arg(&fb)
        .args(["serve", "--init"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Node)
        .unwrap();
    let status = |cfg: &std::path::Path| {
        Command::new(flint)
            .arg("--config")
            .arg(cfg)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let t0 = std::time::Instant::now();
    while !status(&fb) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "fallback node never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let blob = dir.path().join("blob");
    std::fs::write(&blob, vec![7u8; 100_000]).unwrap();
    let put = Command::new(flint)
        .arg("--config")
        .arg(&fb)
        .args(["put", "data/x"])
        .arg(&blob)
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    assert!(node.0.wait().unwrap().success());

    // DPDK for real: the appliance on a memif server port, a DPDK client
    // process on the other end. With a queue pair per reactor each session
    // stays on the core its flow lands on; with one queue for two
    // reactors, sessions are spread and their frames handed over.
    let per_core = appliance_over_memif(dir.path(), 2);
    assert_eq!(per_core["handed_off"], 0, "{per_core:?}");
    let shared = appliance_over_memif(dir.path(), 1);
    assert!(shared["handed_off"] > 0, "{shared:?}");
    assert_eq!(shared["handoff_dropped"], 0, "{shared:?}");
    assert!(per_core["requests"] > 0 && shared["requests"] > 0);
}

/// Serves the appliance over memif with `queues` queue pairs (two
/// reactors), runs a DPDK client process's two sessions against it, and
/// returns the node's protocol counters.
fn appliance_over_memif(
    dir: &std::path::Path,
    queues: u16,
) -> std::collections::BTreeMap<String, u64> {
    let test = "the_appliance_serves_over_dpdk_and_falls_back_only_when_asked";
    let flint = env!("CARGO_BIN_EXE_flint");
    let sock = dir.join("app.sock").display().to_string();
    let cfg = appliance_config(
        dir,
        &format!("net_memif0,role=server,socket={sock},socket-abstract=no"),
        false,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    // The memif peer sends to UDP port 7400; two reactors.
    let text = text
        .replace(
            &text
                .lines()
                .find(|l| l.starts_with("data_addr"))
                .unwrap()
                .to_string(),
            "data_addr = \"127.0.0.1:7400\"",
        )
        .replace("pin = false", "pin = false\ncores = [0, 1]")
        .replace(
            "fallback_to_udp = false",
            &format!("fallback_to_udp = false\nqueues = {queues}"),
        );
    std::fs::write(&cfg, text).unwrap();
    let _ = std::fs::remove_file(dir.join("net.key"));
    let mut node = Command::new(flint)
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--init", "--format", "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Node)
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(flint)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let t0 = std::time::Instant::now();
    while run(&["status"]).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "DPDK node never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = std::fs::read_to_string(dir.join("net.key")).unwrap();
    let mut cli = child(
        test,
        &[
            (ROLE, "app-client".into()),
            ("FLINT_DPDK_SOCK", sock),
            ("FLINT_DPDK_KEY", key.trim().to_string()),
            ("FLINT_DPDK_QUEUES", queues.to_string()),
        ],
        None,
    );
    let ok = wait_line(&mut cli, "OK");
    assert!(cli.wait().unwrap().success());
    let stats: serde_json::Value =
        serde_json::from_str(&run(&["stats", "--json"]).expect("stats")).unwrap();
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    assert!(node.0.wait().unwrap().success());
    let counters: std::collections::BTreeMap<String, u64> = stats["protocol"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    eprintln!(
        "appliance over memif, {queues} queue(s): {ok}; handed_off={}",
        counters["handed_off"]
    );
    counters
}

/// Runs `flint serve --init` on `cfg` (as `nobody` when `unprivileged`)
/// and returns what it printed on failure; it must fail.
fn serve_must_fail(flint: &std::path::Path, cfg: &std::path::Path, unprivileged: bool) -> String {
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(flint);
        c
    } else {
        Command::new(flint)
    };
    let out = cmd
        .arg("--config")
        .arg(cfg)
        .args(["serve", "--init"])
        .current_dir(cfg.parent().unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "it served: {err}");
    err
}

#[test]
fn dpdk_without_permission_or_hugepages_says_what_is_missing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The binary where an unprivileged user may run it.
    let flint = dir.path().join("flint");
    std::fs::copy(env!("CARGO_BIN_EXE_flint"), &flint).unwrap();
    std::fs::set_permissions(&flint, std::fs::Permissions::from_mode(0o755)).unwrap();

    // No permission: af_packet needs a raw socket (CAP_NET_RAW). As root,
    // the node is started as `nobody`.
    let cfg = appliance_config(dir.path(), "net_af_packet0,iface=lo", false);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let err = serve_must_fail(&flint, &cfg, root);
    assert!(
        err.contains("no permission") && err.contains("CAP_NET_RAW") && err.contains("root"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("no permission: {}", err.lines().last().unwrap_or(""));

    // Hugepages required: refused with what is missing, unless this
    // machine has them reserved, free and mounted (then it must get past
    // the check).
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "fallback_to_udp = false",
        "fallback_to_udp = false\nhugepages = \"require\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(" hugetlbfs ");
    if !mounted {
        let err = serve_must_fail(&flint, &cfg, false);
        assert!(
            err.contains("DPDK needs hugepages")
                && err.contains("dpdk.hugepages = \"auto\"")
                && (err.contains("mount -t hugetlbfs") || err.contains("nr_hugepages")),
            "{err}"
        );
        eprintln!("hugepages required: {err}");
    }
    // A policy that is none of the three: a config error naming the key.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("hugepages = \"require\"", "hugepages = \"always\"");
    std::fs::write(&cfg, text).unwrap();
    let err = serve_must_fail(&flint, &cfg, false);
    assert!(err.contains("dpdk.hugepages"), "{err}");
}
