//! Per-block ordering: threads writing sub-block ranges of the same blocks
//! at once — disjoint 1 KiB pieces, and overlapping ranges — in the engine
//! and over the protocol, on two shards with a file system that reduces
//! data (where a write reads, merges and maps blocks across shards), and
//! on one without. Afterwards the disjoint pieces are all there, byte for
//! byte, and every byte of the overlapping ranges is from one of the
//! writes that covered it.

mod common;

use common::{memory_devices, present, small_config, Rng};
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::net::client::{Client, ClientConfig};
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::store::StoreConfig;
use std::sync::Arc;

const THREADS: usize = 4;
/// The region the threads share: 16 blocks.
const REGION: usize = 64 << 10;
const PIECE: usize = 1024;

/// Writes at `offset` of the shared file, through the engine or a client.
type Writer = Box<dyn FnMut(u64, &[u8]) + Send>;

fn node(reduction: bool) -> (Arc<Engine>, [u8; 32], u32) {
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
    let org = e.org_create("acme").unwrap();
    let fs = e.fs_create("data", 2, 1, reduction, 1 << 40).unwrap();
    e.fs_set_owner(fs, org.id).unwrap();
    (Arc::new(e), org.key, fs)
}

/// The byte thread `t` writes in round `round` at position `i`.
fn byte(t: usize, round: usize, i: usize) -> u8 {
    (t as u8 + 1)
        .wrapping_mul(37)
        .wrapping_add(round as u8 * 11)
        .wrapping_add((i / 7) as u8)
}

/// Disjoint pieces: thread `t` writes every piece `k` with `k % THREADS ==
/// t`, in random order, several rounds; the file must hold the last round
/// of every piece.
fn disjoint(mut writers: Vec<Writer>, read: &dyn Fn() -> Vec<u8>) {
    const ROUNDS: usize = 3;
    std::thread::scope(|s| {
        for (t, w) in writers.iter_mut().enumerate() {
            s.spawn(move || {
                let mut rng = Rng(t as u64 + 1);
                for round in 0..ROUNDS {
                    let mut mine: Vec<usize> =
                        (0..REGION / PIECE).filter(|k| k % THREADS == t).collect();
                    for i in (1..mine.len()).rev() {
                        mine.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    for k in mine {
                        let data: Vec<u8> =
                            (0..PIECE).map(|i| byte(t, round, k * PIECE + i)).collect();
                        w((k * PIECE) as u64, &data);
                    }
                }
            });
        }
    });
    let got = read();
    assert_eq!(got.len(), REGION);
    for (i, &b) in got.iter().enumerate() {
        let t = (i / PIECE) % THREADS;
        assert_eq!(
            b,
            byte(t, ROUNDS - 1, i),
            "byte {i} (piece {} of thread {t}) lost",
            i / PIECE
        );
    }
}

/// Overlapping ranges: each thread writes random 1 KiB-aligned ranges of
/// 1–12 KiB filled with its own value; every byte must end up holding the
/// value of a thread that wrote it (or the file's first contents, where
/// none did).
fn overlapping(mut writers: Vec<Writer>, read: &dyn Fn() -> Vec<u8>) {
    let covered: Vec<Vec<bool>> = std::thread::scope(|s| {
        let hs: Vec<_> = writers
            .iter_mut()
            .enumerate()
            .map(|(t, w)| {
                s.spawn(move || {
                    let mut rng = Rng(100 + t as u64);
                    let mut mine = vec![false; REGION];
                    for _ in 0..60 {
                        let len = PIECE * (1 + rng.below(12) as usize);
                        let at = PIECE * rng.below(((REGION - len) / PIECE) as u64 + 1) as usize;
                        w(at as u64, &vec![0xA0 + t as u8; len]);
                        mine[at..at + len].iter_mut().for_each(|c| *c = true);
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got = read();
    for (i, &b) in got.iter().enumerate() {
        let ok = (0..THREADS).any(|t| covered[t][i] && b == 0xA0 + t as u8)
            || (!(0..THREADS).any(|t| covered[t][i]) && b == 0x11);
        assert!(ok, "byte {i} is {b:#x}: from no write that covered it");
    }
}

fn engine_writers(e: &Arc<Engine>, ino: u64) -> Vec<Writer> {
    (0..THREADS)
        .map(|_| {
            let e = e.clone();
            Box::new(move |off: u64, d: &[u8]| e.write(ino, off, d.to_vec()).unwrap()) as Writer
        })
        .collect()
}

fn run_embedded(reduction: bool) {
    let (e, _, fs) = node(reduction);
    let ino = e.create(fs, "shared").unwrap();
    disjoint(engine_writers(&e, ino), &|| e.read(ino, 0, REGION).unwrap());
    let ino = e.create(fs, "overlap").unwrap();
    e.write(ino, 0, vec![0x11; REGION]).unwrap();
    overlapping(engine_writers(&e, ino), &|| e.read(ino, 0, REGION).unwrap());
    let bad: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
    assert!(bad.is_empty(), "{bad:?}");
}

fn run_remote(reduction: bool) {
    let (e, key, fs) = node(reduction);
    let port = Arc::new(UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap());
    let srv = Server::start_polled(e.clone(), vec![(0, port)], ServerConfig::default()).unwrap();
    let clients = |path: &str, ino: &mut u64| -> Vec<Writer> {
        (0..THREADS)
            .map(|_| {
                let mut c =
                    Client::connect(srv.addr(), "acme", &key, ClientConfig::default()).unwrap();
                let (i, _) = c.open("data", path, true).unwrap();
                *ino = i;
                Box::new(move |off: u64, d: &[u8]| c.write(i, off, d).unwrap()) as Writer
            })
            .collect()
    };
    let mut ino = 0;
    let ws = clients("shared", &mut ino);
    disjoint(ws, &|| e.read(ino, 0, REGION).unwrap());
    let o = e.create(fs, "overlap").unwrap();
    e.write(o, 0, vec![0x11; REGION]).unwrap();
    let ws = clients("overlap", &mut ino);
    assert_eq!(ino, o);
    overlapping(ws, &|| e.read(o, 0, REGION).unwrap());
    srv.stop();
}

#[test]
fn concurrent_sub_block_writes_in_the_engine_lose_nothing() {
    run_embedded(true);
    run_embedded(false);
}

#[test]
fn concurrent_sub_block_writes_over_the_protocol_lose_nothing() {
    run_remote(true);
    run_remote(false);
}
