//! Stripes across nodes: an engine whose devices are slices on three peer
//! nodes (each a server of the data protocol with its own engine), reached
//! over the protocol on loopback. Files written through it are read back;
//! with one peer stopped, reads go on from parity; a second engine — the
//! shard's next owner — opens the slices left, with a blank slice on a
//! fourth node in the lost one's place, finds every file, rebuilds onto
//! the fourth node (scrub clean) and then reads with another node gone; a
//! call with an older epoch than a slice has seen is refused; a session of
//! another organization is refused.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use common::{engine, small_config, Rng};
use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::nic::udp::UdpPort;
use flint_engine::cluster::remote::{RemoteDevice, RemoteSpec};
use flint_engine::cluster::slices::Slices;
use flint_engine::engine::Engine;
use flint_engine::net::client::{Client, ClientConfig};
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::net::slice::{SliceCall, SliceRequest};
use flint_engine::net::wire::Request;

const ORG: &str = "_cluster";
const KEY: [u8; 32] = [7; 32];

struct Peer {
    server: Option<Server>,
    _engine: Arc<Engine>,
    slices: Arc<Slices>,
    _dir: tempfile::TempDir,
}

fn peer() -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let devs = common::memory_devices(3, 32);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(common::present(&devs)).unwrap();
    e.org_create_keyed(ORG, KEY).unwrap();
    e.org_create("tenant").unwrap();
    let e = Arc::new(e);
    let slices = Arc::new(Slices::new(&dir.path().join("slices"), ORG, 256 << 20).unwrap());
    let port = Arc::new(UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap());
    let server = Server::start_polled(
        e.clone(),
        vec![(0, port)],
        ServerConfig {
            slices: Some(slices.clone()),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    Peer {
        server: Some(server),
        _engine: e,
        slices,
        _dir: dir,
    }
}

fn spec(p: &Peer, i: usize, epoch: &Arc<AtomicU64>) -> RemoteSpec {
    RemoteSpec {
        name: format!("node{i}"),
        peer: p.server.as_ref().unwrap().addr(),
        slice: "bucket-1".into(),
        bytes: 96 << 20,
        org: ORG.into(),
        key: KEY,
        epoch: epoch.clone(),
        timeout: Duration::from_millis(500),
    }
}

fn devices(peers: &[Peer], epoch: &Arc<AtomicU64>) -> Vec<Arc<dyn BlockDevice>> {
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Arc::new(RemoteDevice::open(spec(p, i, epoch)).unwrap()) as Arc<dyn BlockDevice>
        })
        .collect()
}

#[test]
fn an_engine_on_three_nodes_slices_survives_a_node_and_moves_with_its_data() {
    let mut peers: Vec<Peer> = (0..4).map(|_| peer()).collect();
    let epoch = Arc::new(AtomicU64::new(1));
    let devs = devices(&peers[..3], &epoch);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(common::present(&devs)).unwrap();
    let fs = e.fs_create("data", 2, 1, false, 1 << 30).unwrap();
    let mut rng = Rng(11);
    let mut files = Vec::new();
    for i in 0..12 {
        let ino = e.create(fs, &format!("f{i}")).unwrap();
        let data = rng.data(1000 + (i * 37_000) % 400_000);
        e.write(ino, 0, data.clone()).unwrap();
        files.push((format!("f{i}"), ino, data));
    }
    e.sync().unwrap();
    for (_, ino, data) in &files {
        assert!(e.read(*ino, 0, data.len()).unwrap() == *data);
    }
    for p in &peers[..3] {
        assert!(p.slices.served() > 0, "every node holds chunks");
    }

    // Node 0 stops: reads go on from the other two (a stripe is 2+1).
    peers[0].server.take().unwrap().stop();
    for (_, ino, data) in &files {
        assert!(
            e.read(*ino, 0, data.len()).unwrap() == *data,
            "degraded read"
        );
    }
    let node0 = e
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.name == "node0")
        .unwrap();
    assert!(node0.errors > 0, "reads went around node 0: {node0:?}");
    drop(e);

    // The shard's next owner (epoch 2) opens the slices on the two nodes
    // left, and a blank one on node 3 in node 0's place: every file is
    // there.
    let epoch2 = Arc::new(AtomicU64::new(2));
    let open = |i: usize| {
        Some(
            Arc::new(RemoteDevice::open(spec(&peers[i], i, &epoch2)).unwrap())
                as Arc<dyn BlockDevice>,
        )
    };
    let slots = vec![open(3), open(1), open(2)];
    let mut next = engine();
    next.open(slots).unwrap();
    let fs = next
        .fs_by_name("data")
        .unwrap()
        .expect("the file system is there");
    let check = |e: &Engine, what: &str| {
        for (name, _, data) in &files {
            let ino = e.lookup(fs, name).unwrap().expect("the file is there");
            assert!(
                e.read(ino, 0, data.len()).unwrap() == *data,
                "{name} {what}"
            );
        }
    };
    check(&next, "after the move");
    // Rebuild onto node 3: every stripe is whole again.
    let done = next.replace_device("node3", false).unwrap();
    assert_eq!(done.index, 0);
    assert!(done.chunks > 0, "{done:?}");
    assert!(next.devices().unwrap().iter().all(|d| d.healthy));
    let scrub = next.scrub(|_| {}).unwrap();
    assert_eq!(
        (scrub.unrecoverable, scrub.unprotected_chunks),
        (0, 0),
        "{scrub:?}"
    );
    // Node 1 goes too: the rebuilt chunks on node 3 carry the reads.
    peers[1].server.take().unwrap().stop();
    check(&next, "with node 1 gone as well");
    assert!(peers[3].slices.served() > 0);

    // The old owner's epoch is fenced off on every slice the new one used.
    let mut old = Client::connect(
        peers[2].server.as_ref().unwrap().addr(),
        ORG,
        &KEY,
        ClientConfig::default(),
    )
    .unwrap();
    let stale = old.call(&Request::Slice(SliceRequest {
        epoch: 1,
        slice: "bucket-1".into(),
        call: SliceCall::Write {
            lba: 0,
            data: vec![0xee; 4096],
        },
    }));
    assert_eq!(stale.unwrap_err().errno(), -libc::ESTALE);
    assert_eq!(peers[2].slices.stale(), 1);

    // Another organization's session may not touch slices.
    let tenant = peers[2]._engine.orgs().unwrap();
    let tenant = tenant.iter().find(|o| o.name == "tenant").unwrap();
    let mut t = Client::connect(
        peers[2].server.as_ref().unwrap().addr(),
        "tenant",
        &tenant.key,
        ClientConfig::default(),
    )
    .unwrap();
    let denied = t.call(&Request::Slice(SliceRequest {
        epoch: 9,
        slice: "bucket-1".into(),
        call: SliceCall::Read { lba: 0, blocks: 1 },
    }));
    assert_eq!(denied.unwrap_err().errno(), -libc::EACCES);
}
