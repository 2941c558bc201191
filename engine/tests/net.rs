//! The data protocol end to end over loopback UDP: sessions opened by
//! challenge-response per organization, every file operation, large
//! messages in packets, loss recovered by retransmission, refused keys,
//! organizations kept apart, malformed and replayed frames dropped and
//! counted, expired sessions and server restarts reconnected.

mod common;

use common::{memory_devices, present, small_config, Rng};
use flint_dataplane::nic::lossy::LossyPort;
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::nic::Port;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::net::client::{Client, ClientConfig, ClientError};
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::net::wire::{self, Kind, Request};
use flint_engine::store::StoreConfig;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Rig {
    engine: Arc<Engine>,
    acme: [u8; 32],
    globex: [u8; 32],
}

/// An engine with two shards, organizations `acme` (owning `data`) and
/// `globex` (owning `other`).
fn rig() -> Rig {
    let devs = memory_devices(4, 64);
    let mut e = Engine::start(&ReactorConfig {
        cores: vec![],
        pin: false,
        ..ReactorConfig::default()
    })
    .unwrap();
    let cfg = StoreConfig {
        shards: 2,
        ..small_config()
    };
    e.format(devs.clone(), cfg, false).unwrap();
    e.open(present(&devs)).unwrap();
    let acme = e.org_create("acme").unwrap();
    let globex = e.org_create("globex").unwrap();
    let data = e.fs_create("data", 2, 1, true, 1 << 40).unwrap();
    e.fs_set_owner(data, acme.id).unwrap();
    let other = e.fs_create("other", 2, 1, true, 1 << 40).unwrap();
    e.fs_set_owner(other, globex.id).unwrap();
    Rig {
        engine: Arc::new(e),
        acme: acme.key,
        globex: globex.key,
    }
}

fn serve(r: &Rig, port: Arc<dyn Port>, idle: Duration) -> Server {
    Server::start_polled(
        r.engine.clone(),
        vec![(0, port)],
        ServerConfig {
            idle,
            ..ServerConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn every_operation_round_trips_and_large_messages_span_packets() {
    let r = rig();
    let srv = serve(
        &r,
        Arc::new(UdpPort::bind(loopback()).unwrap()),
        Duration::from_secs(60),
    );
    let mut c = Client::connect(srv.addr(), "acme", &r.acme, ClientConfig::default()).unwrap();
    let (ino, size) = c.open("data", "f", true).unwrap();
    assert_eq!(size, 0);
    let mut rng = Rng(3);
    let big = rng.data(3 << 20);
    c.write(ino, 0, &big).unwrap();
    c.write(ino, 100, b"hello").unwrap();
    let mut want = big.clone();
    want[100..105].copy_from_slice(b"hello");
    assert!(c.read(ino, 0, 4 << 20).unwrap() == want);
    c.sync().unwrap();
    assert_eq!(c.stat(ino).unwrap().size, 3 << 20);
    assert_eq!(c.open("data", "f", false).unwrap(), (ino, 3 << 20));
    let names: Vec<String> = c
        .list("data")
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, vec!["f".to_string()]);
    c.truncate(ino, 10).unwrap();
    assert_eq!(c.read(ino, 0, 100).unwrap(), want[..10].to_vec());
    assert_eq!(
        c.open("data", "missing", false).unwrap_err().errno(),
        -libc::ENOENT
    );
    c.unlink("data", "f").unwrap();
    assert!(c.list("data").unwrap().is_empty());
    // Directories over the protocol: nested paths, listings in pages,
    // renames, links, symlinks and their refusals' errnos.
    let d = c.mkdir("data", "ds", 0o750).unwrap();
    assert!(d.is_dir() && d.mode & 0o7777 == 0o750, "{d:?}");
    c.mkdir("data", "ds/train", 0o755).unwrap();
    for i in 0..30 {
        let (f, _) = c
            .open("data", &format!("ds/train/{i:03}.jpg"), true)
            .unwrap();
        c.write(f, 0, &[i as u8; 100]).unwrap();
    }
    let mut seen = Vec::new();
    let mut cookie = 0;
    loop {
        let page = c.list_page("data", "ds/train", cookie, 7).unwrap();
        let Some(last) = page.last() else { break };
        cookie = last.cookie;
        seen.extend(page.into_iter().map(|f| (f.name, f.size)));
    }
    assert_eq!(seen.len(), 30);
    assert!(seen.iter().all(|(_, size)| *size == 100));
    c.rename("data", "ds/train/000.jpg", "ds/first.jpg", 0)
        .unwrap();
    assert_eq!(c.stat_path("data", "ds/first.jpg").unwrap().size, 100);
    assert_eq!(c.link("data", "ds/first.jpg", "hard").unwrap().nlink, 2);
    c.symlink("data", "ds/first.jpg", "soft").unwrap();
    assert_eq!(c.readlink("data", "soft").unwrap(), b"ds/first.jpg");
    let errno = |r: Result<(), ClientError>| r.unwrap_err().errno();
    assert_eq!(errno(c.rmdir("data", "ds")), -libc::ENOTEMPTY);
    assert_eq!(errno(c.unlink("data", "ds")), -libc::EISDIR);
    assert_eq!(
        errno(c.rename("data", "hard", "ds/first.jpg", 1)),
        -libc::EEXIST
    );
    assert_eq!(
        errno(c.mkdir("data", "nope/x", 0o755).map(|_| ())),
        -libc::ENOENT
    );
    assert_eq!(
        errno(c.open("data", "ds", false).map(|_| ())),
        -libc::EISDIR
    );
    c.unlink("data", "ds/first.jpg").unwrap();
    assert_eq!(c.stat_path("data", "hard").unwrap().nlink, 1);
    // Extended attributes by path.
    c.setxattr("data", "hard", "user.label", b"cat", 1).unwrap();
    c.setxattr("data", "hard", "user.split", b"train", 0)
        .unwrap();
    assert_eq!(c.getxattr("data", "hard", "user.label").unwrap(), b"cat");
    assert_eq!(
        c.listxattr("data", "hard").unwrap(),
        vec![b"user.label".to_vec(), b"user.split".to_vec()]
    );
    assert_eq!(
        errno(c.setxattr("data", "hard", "user.label", b"dog", 1)),
        -libc::EEXIST
    );
    c.removexattr("data", "hard", "user.label").unwrap();
    assert_eq!(
        c.getxattr("data", "hard", "user.label")
            .unwrap_err()
            .errno(),
        -libc::ENODATA
    );
    assert_eq!(
        errno(c.setxattr("data", "hard", "user.big", &[0; 2000], 0)),
        -libc::E2BIG
    );
    // Many requests in flight at once, completed by tag.
    let (ino, _) = c.open("data", "q", true).unwrap();
    for i in 0..32u64 {
        c.submit(
            &Request::Write {
                ino,
                offset: i * 4096,
                data: vec![i as u8; 4096],
            },
            i,
        )
        .unwrap();
    }
    let mut got = 0;
    while got < 32 {
        for done in c.poll(Duration::from_secs(5)).unwrap() {
            assert_eq!(done.status, 0);
            got += 1;
        }
    }
    let back = c.read(ino, 0, 32 * 4096).unwrap();
    assert!(back
        .chunks(4096)
        .enumerate()
        .all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    assert!(srv.counters().requests.load(Ordering::Relaxed) > 40);
    srv.stop();
}

#[test]
fn loss_both_ways_is_recovered_by_retransmission() {
    let r = rig();
    let server_port = Arc::new(LossyPort::new(UdpPort::bind(loopback()).unwrap(), 7));
    let srv = serve(&r, server_port.clone(), Duration::from_secs(60));
    let client_port = Box::new(LossyPort::new(UdpPort::bind(loopback()).unwrap(), 5));
    let cfg = ClientConfig {
        rto: Duration::from_millis(5),
        ..ClientConfig::default()
    };
    let mut c = Client::connect_via(client_port, srv.addr(), "acme", &r.acme, cfg).unwrap();
    let (ino, _) = c.open("data", "lossy", true).unwrap();
    let mut rng = Rng(11);
    let mut model = vec![0u8; 0];
    for i in 0..60u64 {
        let len = 1 + rng.below(40_000) as usize;
        let off = rng.below(200_000);
        let data = rng.data(len);
        c.write(ino, off, &data).unwrap();
        if model.len() < off as usize + len {
            model.resize(off as usize + len, 0);
        }
        model[off as usize..off as usize + len].copy_from_slice(&data);
        if i % 10 == 0 {
            assert!(c.read(ino, 0, model.len()).unwrap() == model);
        }
    }
    assert!(c.read(ino, 0, model.len()).unwrap() == model);
    assert!(server_port.dropped() > 0);
    assert!(c.stats().retransmits > 0, "{:?}", c.stats());
    // Each write ran once: retransmitted requests got the kept answers.
    assert!(srv.counters().resent.load(Ordering::Relaxed) > 0);
    srv.stop();
}

#[test]
fn wrong_keys_and_other_organizations_are_refused_and_counted() {
    let r = rig();
    let srv = serve(
        &r,
        Arc::new(UdpPort::bind(loopback()).unwrap()),
        Duration::from_secs(60),
    );
    let quick = ClientConfig {
        timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let err = Client::connect(srv.addr(), "acme", &[9; 32], quick.clone())
        .err()
        .unwrap();
    assert_eq!(err.errno(), -libc::EACCES, "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    let err = Client::connect(srv.addr(), "nobody", &r.acme, quick.clone())
        .err()
        .unwrap();
    assert_eq!(err.errno(), -libc::EACCES);
    assert_eq!(srv.counters().auth_failures.load(Ordering::Relaxed), 2);
    // globex cannot see acme's file system or files.
    let mut a = Client::connect(srv.addr(), "acme", &r.acme, quick.clone()).unwrap();
    let (ino, _) = a.open("data", "secret", true).unwrap();
    a.write(ino, 0, b"acme only").unwrap();
    let mut g = Client::connect(srv.addr(), "globex", &r.globex, quick).unwrap();
    assert_eq!(
        g.open("data", "secret", false).unwrap_err().errno(),
        -libc::EACCES
    );
    assert_eq!(g.read(ino, 0, 9).unwrap_err().errno(), -libc::EACCES);
    assert_eq!(g.write(ino, 0, b"x").unwrap_err().errno(), -libc::EACCES);
    assert_eq!(g.list("data").unwrap_err().errno(), -libc::EACCES);
    g.open("other", "mine", true).unwrap();
    assert!(srv.counters().cross_org.load(Ordering::Relaxed) >= 4);
    assert_eq!(a.read(ino, 0, 9).unwrap(), b"acme only");
    srv.stop();
}

#[test]
fn malformed_replayed_and_foreign_frames_are_dropped_and_counted() {
    let r = rig();
    let srv = serve(
        &r,
        Arc::new(UdpPort::bind(loopback()).unwrap()),
        Duration::from_secs(60),
    );
    let mut c = Client::connect(srv.addr(), "acme", &r.acme, ClientConfig::default()).unwrap();
    let (ino, _) = c.open("data", "f", true).unwrap();
    c.write(ino, 0, b"before").unwrap();
    let raw = UdpSocket::bind(loopback()).unwrap();
    let to = srv.addr();
    // Garbage, truncated headers, a bad checksum, another version.
    let mut buf = Vec::new();
    wire::packets(Kind::Request, 1, 1, 0, b"\x04", 512, &mut buf, |_| {});
    let good = buf.clone();
    raw.send_to(b"not a flint frame at all", to).unwrap();
    raw.send_to(&good[..20], to).unwrap();
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    raw.send_to(&bad, to).unwrap();
    let mut v2 = good.clone();
    v2[4] = 2;
    raw.send_to(&v2, to).unwrap();
    // A well-formed request for a session that does not exist.
    raw.send_to(&good, to).unwrap();
    // Oversized: a message length past the limit.
    let mut huge = good.clone();
    huge[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    raw.send_to(&huge, to).unwrap();
    let mut rng = Rng(1);
    for _ in 0..500 {
        let mut f = good.clone();
        let i = rng.below(f.len() as u64) as usize;
        f[i] = rng.next() as u8;
        let cut = rng.below(f.len() as u64 + 1) as usize;
        raw.send_to(&f[..cut], to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let n = |name: &str| {
        srv.counters()
            .snapshot()
            .into_iter()
            .find(|(k, _)| *k == name)
            .unwrap()
            .1
    };
    assert!(n("malformed") >= 3, "{:?}", srv.counters().snapshot());
    assert!(n("bad_version") >= 1);
    assert!(n("unknown_session") >= 1);
    // The session's frames forged from another address are dropped.
    let mut forged = Vec::new();
    wire::packets(
        Kind::Request,
        c.session_id(),
        1,
        0,
        b"\x04",
        512,
        &mut forged,
        |_| {},
    );
    raw.send_to(&forged, to).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(n("wrong_peer"), 1);
    // And the server still serves.
    assert_eq!(c.read(ino, 0, 6).unwrap(), b"before");
    srv.stop();
}

#[test]
fn expired_sessions_and_server_restarts_reconnect_transparently() {
    let r = rig();
    let port = Arc::new(UdpPort::bind(loopback()).unwrap());
    let addr = port.local_addr().unwrap();
    let srv = serve(&r, port, Duration::from_millis(300));
    let mut c = Client::connect(addr, "acme", &r.acme, ClientConfig::default()).unwrap();
    let (ino, _) = c.open("data", "f", true).unwrap();
    c.write(ino, 0, b"one").unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    c.write(ino, 3, b"two").unwrap();
    assert_eq!(c.stats().reconnects, 1);
    assert!(srv.counters().unknown_session.load(Ordering::Relaxed) >= 1);
    c.sync().unwrap();
    srv.stop();
    // A new server on the same address (a restart): the session is gone.
    let srv = serve(
        &r,
        Arc::new(UdpPort::bind(addr).unwrap()),
        Duration::from_secs(60),
    );
    assert_eq!(c.read(ino, 0, 6).unwrap(), b"onetwo");
    assert_eq!(c.stats().reconnects, 2);
    srv.stop();
    let _ = ClientError::Busy;
}
