//! The cluster's etcd client, membership and coordinator against a real
//! etcd (Debian's etcd-server, which scripts/setup.sh installs): the JSON
//! gateway's ranges, transactions, leases and watches, failover past a dead
//! member, and nodes that register, get a map and fail over when one
//! leaves.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flint_engine::cluster::coord::{Coordinator, Step};
use flint_engine::cluster::etcd::Etcd;
use flint_engine::cluster::keys::{ClusterDoc, Keys, State};
use flint_engine::cluster::kv::{Compare, Kv, KvError, Op, Target, Txn};
use flint_engine::cluster::map::{Membership, NodeRecord};
use flint_engine::cluster::member::{now_ms, Member};

struct EtcdProc {
    child: Child,
    _dir: tempfile::TempDir,
    client: String,
}

impl Drop for EtcdProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd(port: u16) -> EtcdProc {
    let dir = tempfile::tempdir().unwrap();
    let client = format!("127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &format!("http://{client}")])
        .args(["--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("t={peer}")])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd is not installed: run scripts/setup.sh (it installs etcd-server)");
    let e = EtcdProc {
        child,
        _dir: dir,
        client,
    };
    let mut c = Etcd::new(std::slice::from_ref(&e.client), Duration::from_secs(1));
    let t0 = Instant::now();
    while c.range(b"/", false).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    e
}

#[test]
fn the_json_gateway_client_does_ranges_transactions_leases_and_watches() {
    let e = etcd(17961);
    // A dead member first: the client fails over to the live one.
    let mut c = Etcd::new(
        &["127.0.0.1:1".to_string(), e.client.clone()],
        Duration::from_secs(1),
    );
    let r1 = c.put(b"/t/a", b"1", 0).unwrap();
    c.put(b"/t/b", b"2", 0).unwrap();
    c.put(b"/u", b"3", 0).unwrap();
    let r = c.range(b"/t/", true).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert_eq!(
        (r.kvs[0].key.as_slice(), r.kvs[0].value.as_slice()),
        (&b"/t/a"[..], &b"1"[..])
    );
    assert_eq!(r.kvs[0].create_revision, r1);

    let claim = |c: &mut Etcd, lease| {
        c.txn(&Txn {
            compare: vec![Compare {
                key: b"/t/lock".to_vec(),
                target: Target::Create(0),
            }],
            success: vec![Op::Put {
                key: b"/t/lock".to_vec(),
                value: b"me".to_vec(),
                lease,
            }],
            failure: vec![Op::Get {
                key: b"/t/lock".to_vec(),
            }],
        })
        .unwrap()
    };
    let (lease, ttl) = c.grant(5).unwrap();
    assert_eq!(ttl, 5);
    assert!(claim(&mut c, lease).succeeded);
    let again = claim(&mut c, lease);
    assert!(!again.succeeded);
    assert_eq!(again.gets[0].as_ref().unwrap().lease, lease);
    assert!(c.keep_alive(lease).unwrap() > 0);

    // A watch sees the lock go when its lease is revoked.
    let mut w = c.watch(b"/t/", true, 0).unwrap();
    c.revoke(lease).unwrap();
    let ev = w.events().unwrap();
    assert!(ev.iter().any(|e| e.deleted && e.kv.key == b"/t/lock"));
    assert_eq!(c.keep_alive(lease), Err(KvError::LeaseGone));
    assert_eq!(c.put(b"/t/x", b"y", lease), Err(KvError::LeaseGone));
    assert!(c.range(b"/t/lock", false).unwrap().kvs.is_empty());

    // Nothing answers: a typed error that names etcd.
    let mut dead = Etcd::new(&["127.0.0.1:1".to_string()], Duration::from_millis(300));
    assert!(matches!(
        dead.range(b"/", false),
        Err(KvError::Unavailable(_))
    ));
}

#[test]
fn nodes_register_get_a_map_and_fail_over_when_one_leaves() {
    let e = etcd(17971);
    let endpoints = vec![e.client.clone()];
    let keys = Keys::new("t");
    let mut admin = Etcd::new(&endpoints, Duration::from_secs(1));
    admin
        .put(
            &keys.config(),
            &serde_json::to_vec(&ClusterDoc {
                shards: 12,
                k: 0,
                m: 0,
            })
            .unwrap(),
            0,
        )
        .unwrap();
    for id in 1..=3 {
        let m = serde_json::to_vec(&Membership::Active).unwrap();
        admin.put(&keys.member(id), &m, 0).unwrap();
    }
    let mut nodes: Vec<(Member, Coordinator, Etcd)> = (1..=3)
        .map(|id| {
            let rec = NodeRecord {
                id,
                data_addr: format!("127.0.0.1:{}", 7400 + id),
                mgmt_addr: String::new(),
                cores: 2,
                devices: 1,
            };
            (
                Member::new(keys.clone(), rec, 2),
                Coordinator::new(keys.clone(), id),
                Etcd::new(&endpoints, Duration::from_secs(1)),
            )
        })
        .collect();
    let step = |nodes: &mut Vec<(Member, Coordinator, Etcd)>| {
        let mut wrote = Vec::new();
        for (m, c, kv) in nodes.iter_mut() {
            m.tick(kv, now_ms()).unwrap();
            if let Some(lease) = m.lease() {
                if let Step::Wrote(map) = c.tick(kv, lease).unwrap() {
                    wrote.push(map);
                }
            }
        }
        wrote
    };
    // The first map: 4 shards each, one coordinator.
    let t0 = Instant::now();
    loop {
        step(&mut nodes);
        let st = State::read(&mut admin, &keys).unwrap();
        // The first map may hold only the nodes registered by then; the
        // others join it through handoffs.
        let settled = st.map.as_ref().is_some_and(|m| {
            m.load().values().copied().collect::<Vec<_>>() == vec![4, 4, 4]
                && m.shards.iter().all(|p| p.moving_to.is_none())
        });
        if settled && nodes.iter().all(|n| n.0.map() == st.map.as_ref()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no balanced map: {:?}",
            st.map
        );
    }
    assert_eq!(nodes.iter().filter(|n| n.1.is_leader()).count(), 1);
    let now = now_ms();
    for s in 0..12u32 {
        let serving = nodes
            .iter()
            .filter(|n| n.0.serves(s, now).is_some())
            .count();
        assert_eq!(serving, 1, "shard {s} is served once");
    }
    // The coordinator leaves (its lease is revoked): another takes the
    // role and moves its shards at once.
    let leader = nodes.iter().position(|n| n.1.is_leader()).unwrap();
    let (mut gone, _, mut kv) = nodes.remove(leader);
    gone.leave(&mut kv).unwrap();
    let t0 = Instant::now();
    loop {
        step(&mut nodes);
        let st = State::read(&mut admin, &keys).unwrap();
        let map = st.map.unwrap();
        if map.owned(gone.id()).next().is_none() {
            assert_eq!(map.load().values().filter(|&&n| n > 0).count(), 2);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no failover");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(nodes.iter().filter(|n| n.1.is_leader()).count(), 1);
}
