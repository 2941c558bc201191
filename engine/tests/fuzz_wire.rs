//! A fuzz target for the data protocol's parsers, run briefly by CI
//! (`FLINT_FUZZ_SECS`, default 3 s; run it longer locally).
//!
//! Stable Rust has no coverage-guided fuzzer, so this is a structured
//! mutation fuzzer: it starts from a corpus of valid frames of every kind
//! and message, mutates them (bit flips, byte stores, truncation, growth,
//! splices, header fields set to edge values) and, half the time, reseals
//! the checksum so the mutation reaches the parsers behind it. Every parser
//! must return an error or a value, never panic; every decoded message must
//! re-encode to bytes that decode to the same value. The last part throws
//! the same frames at a live server and checks it still serves.

mod common;

use flint_engine::codec::{Reader, Writer};
use flint_engine::net::wire::{self, hello, FileStat, Kind, Partial, Request};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let reqs = wire::sample_requests();
    let mut msgs: Vec<(Kind, Vec<u8>)> = Vec::new();
    for r in reqs {
        let mut w = Writer::default();
        r.encode(&mut w);
        msgs.push((Kind::Request, w.buf));
    }
    msgs.push((
        Kind::Hello,
        hello::Hello {
            org: "acme".into(),
            nonce: [3; 16],
            max_frame: 8972,
        }
        .encode(),
    ));
    msgs.push((Kind::Challenge, vec![5; 16]));
    msgs.push((Kind::Auth, vec![6; 32]));
    msgs.push((
        Kind::Welcome,
        hello::Welcome {
            proof: [1; 32],
            credits: 64,
            max_frame: 8972,
            idle_ms: 1000,
        }
        .encode(),
    ));
    msgs.push((Kind::Reject, hello::reject(-13, "authentication failed")));
    let mut body = Writer::default();
    body.u32(1);
    FileStat {
        ino: 1,
        size: 2,
        blocks: 3,
        mode: libc::S_IFREG | 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        atime: 4,
        mtime: 5,
        ctime: 6,
        cookie: 7,
        name: "x".into(),
    }
    .encode(&mut body);
    let mut resp = Vec::new();
    wire::encode_response(0, &body.buf, &mut resp);
    msgs.push((Kind::Response, resp));
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (kind, m) in msgs {
        wire::packets(kind, 42, 9, 1, &m, 512, &mut buf, |f| out.push(f.to_vec()));
    }
    out
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut f = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            3 => {
                let n = rng.below(64);
                f.extend((0..n).map(|_| rng.next() as u8));
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(f.len() + 1);
                let from = rng.below(other.len() + 1);
                f.truncate(at);
                f.extend_from_slice(&other[from..]);
            }
            5 if f.len() >= wire::HEADER => {
                // A header field to an edge value: pkt, pkts, len, msg_len.
                let (at, width) = [(32, 2), (34, 2), (36, 4), (40, 4)][rng.below(4)];
                let v: u32 = [0, 1, 2, u32::from(u16::MAX), u32::MAX, f.len() as u32][rng.below(6)];
                f[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            6 if f.len() > wire::HEADER + 4 => {
                // A length prefix inside the message to an edge value.
                let at = wire::HEADER + 1 + rng.below(f.len() - wire::HEADER - 4);
                let v = [0u32, 255, 256, u32::MAX, 1 << 24][rng.below(5)];
                f[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    if rng.below(2) == 0 {
        wire::reseal(&mut f);
    }
    f
}

/// Feeds one frame to every parser behind the wire.
fn exercise(f: &[u8], partial: &mut Option<(u64, Partial)>) -> bool {
    let Ok((h, off, payload)) = wire::decode(f) else {
        return false;
    };
    assert!(off + payload.len() <= h.msg_len as usize);
    // Reassembly across frames of "one" message must refuse misfits.
    let p = match partial {
        Some((req, p)) if *req == h.request => p,
        _ => {
            *partial = Some((h.request, Partial::new(&h)));
            &mut partial.as_mut().expect("set above").1
        }
    };
    if let Ok(true) = p.add(&h, off, payload) {
        *partial = None;
    }
    let msg = payload;
    match h.kind {
        Kind::Request => {
            if let Ok(r) = Request::decode(msg) {
                let mut w = Writer::default();
                r.encode(&mut w);
                assert_eq!(
                    Request::decode(&w.buf).expect("re-encoded request decodes"),
                    r
                );
            }
        }
        Kind::Hello => {
            if let Ok(x) = hello::Hello::decode(msg) {
                assert_eq!(hello::Hello::decode(&x.encode()).expect("round trip"), x);
            }
        }
        Kind::Welcome => {
            if let Ok(x) = hello::Welcome::decode(msg) {
                assert_eq!(hello::Welcome::decode(&x.encode()).expect("round trip"), x);
            }
        }
        Kind::Reject => {
            let _ = hello::decode_reject(msg);
        }
        Kind::Response => {
            if let Ok((_, body)) = wire::decode_response(msg) {
                let mut r = Reader::new(body);
                if let Ok(n) = r.count(28, "files") {
                    for _ in 0..n {
                        if FileStat::decode(&mut r).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        Kind::Challenge | Kind::Auth => {}
    }
    true
}

#[test]
fn packet_parsers_survive_mutated_frames() {
    let secs: f64 = std::env::var("FLINT_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let seed: u64 = std::env::var("FLINT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let corpus = corpus();
    for f in &corpus {
        assert!(wire::decode(f).is_ok(), "corpus frames are valid");
    }
    let mut rng = Rng(seed | 1);
    let mut partial = None;
    let (mut n, mut accepted) = (0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            let f = mutate(&mut rng, &corpus);
            accepted += u64::from(exercise(&f, &mut partial));
            n += 1;
        }
    }
    eprintln!("fuzz: {n} frames, {accepted} passed the frame checks, seed {seed}");
    assert!(
        accepted > n / 20,
        "mutations rarely reach the message parsers"
    );
}

#[test]
fn a_live_server_survives_mutated_frames() {
    use flint_dataplane::nic::udp::UdpPort;
    use flint_dataplane::nic::Port;
    use flint_engine::net::client::{Client, ClientConfig};
    use flint_engine::net::server::{Server, ServerConfig};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let (e, key) = common::org_node("fuzz");
    let srv = Server::start(
        Arc::new(e),
        Arc::new(UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap()),
        ServerConfig::default(),
    )
    .unwrap();
    let mut c = Client::connect(srv.addr(), "fuzz", &key, ClientConfig::default()).unwrap();
    let (ino, _) = c.open("data", "f", true).unwrap();
    c.write(ino, 0, b"still here").unwrap();
    // Mutated frames, some aimed at the live session.
    let mut corpus = corpus();
    let mut buf = Vec::new();
    let mut w = Writer::default();
    Request::Read {
        ino,
        offset: 0,
        len: 10,
    }
    .encode(&mut w);
    wire::packets(
        Kind::Request,
        c.session_id(),
        1000,
        0,
        &w.buf,
        512,
        &mut buf,
        |f| corpus.push(f.to_vec()),
    );
    let raw = UdpPort::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut rng = Rng(99);
    for _ in 0..5000 {
        let f = mutate(&mut rng, &corpus);
        let _ = raw.send(&f, srv.addr());
    }
    std::thread::sleep(Duration::from_millis(300));
    let dropped: u64 = srv
        .counters()
        .snapshot()
        .iter()
        .filter(|(k, _)| {
            *k != "frames_in"
                && *k != "frames_out"
                && *k != "requests"
                && *k != "sessions"
                && *k != "resent"
        })
        .map(|(_, v)| v)
        .sum();
    assert!(dropped > 1000, "{:?}", srv.counters().snapshot());
    assert_eq!(c.read(ino, 0, 10).unwrap(), b"still here");
    assert!(srv.counters().frames_in.load(Ordering::Relaxed) >= 5000);
    srv.stop();
}
