//! `flint serve` and the `flint` CLI as a user runs them: first start with
//! `--init`, management commands, data put/get over the protocol, SIGTERM
//! (exit 0 after a checkpoint), SIGKILL (recovery), restarts, refused
//! formats, config errors that name their key, ports in use, tokens.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLINT: &str = env!("CARGO_BIN_EXE_flint");

fn free_ports() -> (u16, u16) {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        u.local_addr().unwrap().port(),
        t.local_addr().unwrap().port(),
    )
}

fn config(dir: &Path, extra_server: &str) -> std::path::PathBuf {
    let (data, mgmt) = free_ports();
    let mut text = format!(
        "[reactor]\npoll_mode = \"adaptive\"\npin = false\n\
         [engine]\njournal_blocks = 1024\ncheckpoint_blocks = 1024\n\
         [server]\ndata_addr = \"127.0.0.1:{data}\"\nmgmt_addr = \"127.0.0.1:{mgmt}\"\n{extra_server}\n\
         [[org]]\nname = \"team\"\nkey_file = \"{d}/team.key\"\n\
         [[filesystem]]\nname = \"data\"\nk = 2\nm = 1\ncapacity = \"1GiB\"\norg = \"team\"\n",
        d = dir.display()
    );
    for i in 0..4 {
        text += &format!(
            "[[device]]\nname = \"f{i}\"\nbackend = \"uring\"\npath = \"{}/f{i}.img\"\nsize = \"96MiB\"\n",
            dir.display()
        );
    }
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn flint(cfg: &Path, args: &[&str]) -> Output {
    Command::new(FLINT)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

fn ok(cfg: &Path, args: &[&str]) -> String {
    let out = flint(cfg, args);
    assert!(
        out.status.success(),
        "flint {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn start(cfg: &Path, args: &[&str]) -> Child {
    let child = Command::new(FLINT)
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let t0 = Instant::now();
    while !flint(cfg, &["status", "--json"]).status.success() {
        if t0.elapsed() > Duration::from_secs(20) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the node never came up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn a_node_serves_restarts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    // Not formatted yet: serve without --init says what to do.
    let out = flint(&cfg, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--init"));

    let node = start(&cfg, &["--init"]);
    let status: serde_json::Value = serde_json::from_str(&ok(&cfg, &["status", "--json"])).unwrap();
    assert_eq!(status["devices_healthy"], 4);
    let fs: serde_json::Value = serde_json::from_str(&ok(&cfg, &["fs", "list", "--json"])).unwrap();
    assert_eq!(fs[0]["name"], "data");
    assert_eq!(fs[0]["org"], "team");
    assert_eq!(fs[0]["ack"], "durable");
    assert!(ok(&cfg, &["device", "list"]).contains("healthy"));
    // A write-back file system says so in the listing.
    assert!(ok(
        &cfg,
        &[
            "fs",
            "create",
            "wb",
            "--k",
            "2",
            "--m",
            "1",
            "--capacity",
            "1GiB",
            "--org",
            "team",
            "--write-back",
        ],
    )
    .contains("before durable"));
    assert!(ok(&cfg, &["fs", "list"]).contains("write_back"));
    ok(&cfg, &["fs", "delete", "wb"]);
    // Data over the protocol, authenticated with the org's key file.
    let file = dir.path().join("in.bin");
    let data: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    ok(&cfg, &["put", "data/blob", file.to_str().unwrap()]);
    let back = dir.path().join("out.bin");
    ok(&cfg, &["get", "data/blob", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    // Directories with paths: mkdir, put into one, ls, mv, stat, rm.
    ok(&cfg, &["mkdir", "data/runs"]);
    ok(&cfg, &["mkdir", "data/runs/r1"]);
    ok(
        &cfg,
        &["put", "data/runs/r1/ckpt.bin", file.to_str().unwrap()],
    );
    assert!(ok(&cfg, &["ls", "data/runs/r1"]).contains("ckpt.bin"));
    ok(&cfg, &["mv", "data/runs/r1", "data/runs/best"]);
    let st: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["stat", "data/runs/best/ckpt.bin", "--json"])).unwrap();
    assert_eq!(st["size"], 2_500_000);
    assert_eq!(st["kind"], "file");
    let ls: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["ls", "data/runs", "--json"])).unwrap();
    assert_eq!(ls[0]["name"], "best");
    assert_eq!(ls[0]["kind"], "dir");
    let busy = flint(&cfg, &["rm", "data/runs/best"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("not empty"),
        "{busy:?}"
    );
    ok(&cfg, &["rm", "data/runs/best/ckpt.bin"]);
    ok(&cfg, &["rm", "data/runs/best"]);
    assert!(!ok(&cfg, &["ls", "data/runs"]).contains("best"));
    // Management.
    let org: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["org", "create", "acme", "--json"])).unwrap();
    assert_eq!(org["key"].as_str().unwrap().len(), 64);
    ok(
        &cfg,
        &[
            "fs",
            "create",
            "scratch",
            "--k",
            "2",
            "--m",
            "2",
            "--capacity",
            "64MiB",
            "--org",
            "acme",
        ],
    );
    ok(&cfg, &["fs", "update", "scratch", "--capacity", "128MiB"]);
    let out = flint(
        &cfg,
        &[
            "fs",
            "create",
            "wide",
            "--k",
            "4",
            "--m",
            "2",
            "--capacity",
            "1GiB",
            "--org",
            "acme",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("k + m <= 4"));
    ok(&cfg, &["fs", "delete", "scratch"]);
    let stats: serde_json::Value = serde_json::from_str(&ok(&cfg, &["stats", "--json"])).unwrap();
    assert!(stats["ops"]["write"]["count"].as_u64().unwrap() >= 1);
    // A socket per reactor: every session's datagrams reach the core that
    // owns it, none is handed between cores.
    assert_eq!(stats["protocol"]["handed_off"], 0, "{stats}");
    assert!(stats["protocol"]["requests"].as_u64().unwrap() > 0);
    assert!(ok(&cfg, &["scrub"]).contains("stripes checked"));
    let events = ok(&cfg, &["events"]);
    assert!(
        events.contains("started") && events.contains("fs_deleted"),
        "{events}"
    );
    // A second node on the same ports is refused with the key named.
    let out = flint(&cfg, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.data_addr"));
    // SIGTERM: drain, checkpoint, exit 0.
    signal(&node, libc::SIGTERM);
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped cleanly"));
    // Formatting a formatted engine needs --force.
    let out = flint(&cfg, &["format"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    // Restart; then SIGKILL after an acknowledged (synced) put.
    let node = start(&cfg, &[]);
    ok(&cfg, &["get", "data/blob", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    let mut data2 = data.clone();
    data2.reverse();
    std::fs::write(&file, &data2).unwrap();
    ok(&cfg, &["put", "data/blob2", file.to_str().unwrap()]);
    signal(&node, libc::SIGKILL);
    let _ = node.wait_with_output();
    let node = start(&cfg, &[]);
    ok(&cfg, &["get", "data/blob2", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data2);
    assert!(ok(&cfg, &["ls", "data"]).contains("blob2"));
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());
}

#[test]
fn a_dead_device_is_replaced_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let node = start(&cfg, &["--init"]);
    let file = dir.path().join("in.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    ok(&cfg, &["put", "data/blob", file.to_str().unwrap()]);
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());

    // f2 dies; the config's size makes a blank file in its place.
    std::fs::remove_file(dir.path().join("f2.img")).unwrap();
    let node = start(&cfg, &[]);
    assert!(ok(&cfg, &["device", "list"]).contains("MISSING"));
    let out = flint(&cfg, &["device", "replace", "f1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("already member"), "{err}");
    let said = ok(&cfg, &["device", "replace", "f2"]);
    assert!(said.contains("replaced slot"), "{said}");
    let devs: serde_json::Value =
        serde_json::from_str(&ok(&cfg, &["device", "list", "--json"])).unwrap();
    assert!(
        devs.as_array()
            .unwrap()
            .iter()
            .all(|d| d["healthy"] == true),
        "{devs}"
    );
    assert!(ok(&cfg, &["events"]).contains("device_replaced"));
    let back = dir.path().join("out.bin");
    ok(&cfg, &["get", "data/blob", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());

    // Now f0 dies too: 2+1 survives one loss, so the blob reads back only
    // if f2's rebuilt chunks are real.
    std::fs::remove_file(dir.path().join("f0.img")).unwrap();
    let node = start(&cfg, &[]);
    std::fs::remove_file(&back).unwrap();
    ok(&cfg, &["get", "data/blob", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());
}

#[test]
fn config_errors_and_tokens_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "token = \"s3cret\"");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&bad, text.replace("[engine]", "[engine]\nshard = 3")).unwrap();
    let out = flint(&bad, &["serve"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("shard") && err.contains("config"), "{err}");
    std::fs::write(&bad, text.replace("k = 2\nm = 1", "k = 4\nm = 2")).unwrap();
    let err = String::from_utf8_lossy(&flint(&bad, &["serve"]).stderr).to_string();
    assert!(
        err.contains("filesystem.data") && err.contains("needs 6 devices"),
        "{err}"
    );
    std::fs::write(&bad, text.replace("size = \"96MiB\"\n", "")).unwrap();
    let err = String::from_utf8_lossy(&flint(&bad, &["serve"]).stderr).to_string();
    assert!(
        err.contains("device.f0.path") && err.contains("does not exist"),
        "{err}"
    );

    let node = start(&cfg, &["--init"]);
    let out = flint(&cfg, &["--token", "wrong", "status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    let out = Command::new(FLINT)
        .env("FLINT_TOKEN", "s3cret")
        .args(["--addr", &toml_value(&text, "mgmt_addr"), "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());
}

fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

/// A record of the ride-through test: 4000 bytes (unaligned, so
/// neighbouring records share 4 KiB blocks) that name their writer and
/// index.
fn record(writer: u64, i: u64) -> Vec<u8> {
    let mut x =
        (writer.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1;
    (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Clients ride through SIGKILLs of the appliance: two clients keep
/// writing records (each write acknowledged = durable, no sync) while the
/// node is killed at random moments and started again; their requests wait
/// for the new node, reopen the session and carry on. Afterwards every
/// acknowledged record reads back. `FLINT_RIDE_KILLS` sets the kills.
#[test]
fn clients_ride_through_sigkills_and_keep_every_acknowledged_write() {
    use flint_engine::net::auth::key_from_hex;
    use flint_engine::net::client::{Client, ClientConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let kills: u64 = std::env::var("FLINT_RIDE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let mut node = start(&cfg, &["--init"]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let addr: std::net::SocketAddr = toml_value(&text, "data_addr").parse().unwrap();
    let key_text = std::fs::read_to_string(dir.path().join("team.key")).unwrap();
    let key = key_from_hex(key_text.trim()).unwrap();
    let client_cfg = ClientConfig {
        timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (stop, acked, key, client_cfg) =
                (stop.clone(), acked.clone(), key, client_cfg.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, "team", &key, client_cfg).unwrap();
                let (ino, _) = c.open("data", &format!("ride{w}"), true).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.write(ino, i * 4000, &record(w, i))
                        .unwrap_or_else(|e| panic!("writer {w}, record {i}: {e}"));
                    acked.lock().unwrap().push((w, ino, i));
                    i += 1;
                }
                c.stats().reconnects
            })
        })
        .collect();
    let mut rng = 0x5eed_u64;
    for k in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 300));
        let before = acked.lock().unwrap().len();
        signal(&node, libc::SIGKILL);
        let _ = node.wait_with_output();
        node = start(&cfg, &[]);
        eprintln!("kill {k}: {before} records acknowledged before it");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let reconnects: Vec<u64> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        reconnects.iter().all(|&r| r >= kills / 2),
        "the clients reopened sessions {reconnects:?} times over {kills} kills"
    );
    // One more kill with nothing in flight, then every record checked.
    signal(&node, libc::SIGKILL);
    let _ = node.wait_with_output();
    let node = start(&cfg, &[]);
    let mut c = Client::connect(addr, "team", &key, client_cfg).unwrap();
    for &(w, ino, i) in &acked {
        let got = c.read(ino, i * 4000, 4000).unwrap();
        assert!(
            got == record(w, i),
            "writer {w}'s acknowledged record {i} is damaged or gone"
        );
    }
    assert!(
        acked.len() as u64 > kills * 2,
        "only {} writes acknowledged",
        acked.len()
    );
    signal(&node, libc::SIGTERM);
    assert!(node.wait_with_output().unwrap().status.success());
}
