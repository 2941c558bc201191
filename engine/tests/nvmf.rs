//! The NVMe/TCP target against a real engine (RAM or file devices), driven
//! by the crate's own initiator over loopback TCP: discovery, Connect and
//! Identify as the Linux host needs them, pipelined writes and reads over
//! two I/O queues verified byte for byte (in-capsule and R2T), Flush,
//! Write Zeroes, Deallocate, digests, hosts refused, keep-alive teardown,
//! malformed PDUs (seeded fuzzing: the connection ends cleanly, the target
//! lives), and acknowledged writes surviving SIGKILL of the target while a
//! host keeps writing and reconnects.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{engine, file_devices, memory_devices, present, small_config, Rng};
use flint_engine::engine::Engine;
use flint_engine::nvmf::host::Host;
use flint_engine::nvmf::pdu::Digests;
use flint_engine::nvmf::spec::{admin, feature, io, log, prop, Sqe};
use flint_engine::nvmf::subsystem::DISCOVERY_NQN;
use flint_engine::nvmf::{NvmfConfig, NvmfServer};

const NQN: &str = "nqn.2026-12.io.flint:test";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

fn config(block: u32, mib: u64) -> NvmfConfig {
    let text = format!(
        r#"
        listen = "127.0.0.1:0"
        workers = 2
        [[subsystem]]
        nqn = "{NQN}"
        hosts = ["{HOST}"]
        [[subsystem.namespace]]
        filesystem = "data"
        file = "vol0"
        size = "{mib}MiB"
        block_size = {block}
        "#
    );
    let c: NvmfConfig = toml::from_str(&text).unwrap();
    c.check().unwrap();
    c
}

fn serve(e: Arc<Engine>, block: u32, mib: u64) -> NvmfServer {
    let c = config(block, mib);
    let subs = c.subsystems(&e).unwrap();
    NvmfServer::start(e, subs, "127.0.0.1:0".parse().unwrap(), 2, 4).unwrap()
}

fn node(block: u32, mib: u64) -> (Arc<Engine>, NvmfServer) {
    let devs = memory_devices(3, 96);
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    e.fs_create("data", 2, 1, true, 1 << 30).unwrap();
    let e = Arc::new(e);
    let s = serve(e.clone(), block, mib);
    (e, s)
}

/// An enabled admin queue with `queues` I/O queues granted.
fn admin_queue(addr: SocketAddr, d: Digests, queues: u32, kato: u32) -> Host {
    let (mut a, c) = Host::connect(addr, d, NQN, HOST, 0, 0xFFFF, kato).unwrap();
    assert_eq!(c.status, 0, "connect: {c:?}");
    a.enable().unwrap();
    let c = a
        .set_feature(feature::NUM_QUEUES, (queues - 1) | ((queues - 1) << 16))
        .unwrap();
    assert_eq!(c.status, 0);
    a
}

fn io_queue(addr: SocketAddr, d: Digests, cntlid: u16, qid: u16) -> Host {
    let (q, c) = Host::connect(addr, d, NQN, HOST, qid, cntlid, 0).unwrap();
    assert_eq!(c.status, 0, "I/O connect: {c:?}");
    q
}

#[test]
fn discovery_lists_the_subsystem() {
    let (_e, s) = node(4096, 16);
    let (mut d, c) = Host::connect(
        s.addr(),
        Digests::default(),
        DISCOVERY_NQN,
        "nqn.any",
        0,
        0xFFFF,
        0,
    )
    .unwrap();
    assert_eq!(c.status, 0);
    d.enable().unwrap();
    let id = d.identify(1, 0).unwrap();
    assert_eq!(id.data[111], 2, "a discovery controller");
    // Any host may discover, but sees only subsystems it is admitted to.
    let page = d.log_page(log::DISCOVERY, 2048, 0).unwrap();
    assert_eq!(u64::from_le_bytes(page.data[8..16].try_into().unwrap()), 0);
    drop(d);
    let (mut d, _) = Host::connect(
        s.addr(),
        Digests::default(),
        DISCOVERY_NQN,
        HOST,
        0,
        0xFFFF,
        0,
    )
    .unwrap();
    d.enable().unwrap();
    let page = d.log_page(log::DISCOVERY, 2048, 0).unwrap();
    assert_eq!(u64::from_le_bytes(page.data[8..16].try_into().unwrap()), 1);
    assert!(page.data[1024 + 256..].starts_with(NQN.as_bytes()));
    let port = s.addr().port().to_string();
    assert!(page.data[1024 + 32..].starts_with(port.as_bytes()));
    s.stop();
}

#[test]
fn connect_and_identify_as_linux_needs() {
    let (_e, s) = node(4096, 16);
    let mut a = admin_queue(s.addr(), Digests::default(), 2, 5000);
    let cap = a.prop_get(prop::CAP, true).unwrap().value;
    assert_eq!(cap & 0xFFFF, 127, "MQES");
    assert_ne!(cap & (1 << 37), 0, "NVM command set");
    assert_eq!(a.prop_get(prop::VS, false).unwrap().value, 0x10400);
    let id = a.identify(1, 0).unwrap();
    assert_eq!(id.status, 0);
    let b = &id.data;
    assert_eq!(
        u16::from_le_bytes([b[78], b[79]]),
        a.cntlid,
        "Identify cntlid = Connect's"
    );
    assert_ne!(u16::from_le_bytes([b[320], b[321]]), 0, "KAS");
    assert_eq!(u16::from_le_bytes([b[1800], b[1801]]), 0, "ICDOFF");
    assert_ne!(b[536] & 3, 0, "SGLS");
    assert_ne!(b[77], 0, "MDTS");
    let ns = a.identify(0, 1).unwrap();
    assert_eq!(
        u64::from_le_bytes(ns.data[0..8].try_into().unwrap()),
        16 << 8
    );
    assert_eq!(ns.data[130], 12);
    let list = a.identify(2, 0).unwrap();
    assert_eq!(&list.data[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let desc = a.identify(3, 1).unwrap();
    assert_eq!((desc.data[0], desc.data[1]), (2, 16));
    assert_eq!(
        a.identify(0, 9).unwrap().sct_sc(),
        (0, 0x0B),
        "invalid namespace"
    );
    assert_eq!(a.identify(0x1F, 0).unwrap().sct_sc(), (0, 0x02));
    assert_eq!(a.log_page(log::SMART, 512, 0).unwrap().data[3], 100);
    assert_eq!(a.log_page(0x55, 512, 0).unwrap().sct_sc(), (1, 0x09));
    // Keep Alive, an AER held (no answer), Abort answers "not aborted".
    assert_eq!(
        a.run(Sqe::new(admin::KEEP_ALIVE, 0), None, 0)
            .unwrap()
            .status,
        0
    );
    let aer = a.submit(Sqe::new(admin::ASYNC_EVENT, 0), None, 0).unwrap();
    let ab = a.run(Sqe::new(admin::ABORT, 0), None, 0).unwrap();
    assert_eq!((ab.status, ab.value & 1), (0, 1));
    assert_ne!(ab.cid, aer);
    // I/O queue 3 was not granted; 1 and 2 were.
    let (_, c) = Host::connect(s.addr(), Digests::default(), NQN, HOST, 3, a.cntlid, 0).unwrap();
    assert_eq!(c.sct_sc(), (1, 0x82));
    let mut q = io_queue(s.addr(), Digests::default(), a.cntlid, 1);
    // Admin commands are not I/O.
    assert_eq!(q.identify(1, 0).unwrap().sct_sc(), (0, 0x01));
    s.stop();
}

#[test]
fn hosts_not_admitted_are_refused() {
    let (_e, s) = node(4096, 16);
    let (_, c) = Host::connect(
        s.addr(),
        Digests::default(),
        NQN,
        "nqn.intruder",
        0,
        0xFFFF,
        0,
    )
    .unwrap();
    assert_eq!(c.sct_sc(), (1, 0x84));
    let (_, c) =
        Host::connect(s.addr(), Digests::default(), "nqn.none", HOST, 0, 0xFFFF, 0).unwrap();
    assert_eq!(c.sct_sc(), (1, 0x82));
    // An I/O queue naming another host's controller.
    let a = admin_queue(s.addr(), Digests::default(), 1, 0);
    let (_, c) = Host::connect(
        s.addr(),
        Digests::default(),
        NQN,
        "nqn.intruder",
        1,
        a.cntlid,
        0,
    )
    .unwrap();
    assert_eq!(c.sct_sc(), (1, 0x82));
    assert!(
        s.target()
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    s.stop();
}

/// Pipelined random writes (4 KiB .. 1 MiB, in-capsule and R2T) and reads
/// over two I/O queues, verified against a model of the volume.
fn verify_workload(d: Digests, block: u32, seed: u64) {
    let mib = 32u64;
    let (_e, s) = node(block, mib);
    let shift = block.trailing_zeros() as u8;
    let a = admin_queue(s.addr(), d, 2, 0);
    let mut queues = [
        io_queue(s.addr(), d, a.cntlid, 1),
        io_queue(s.addr(), d, a.cntlid, 2),
    ];
    let bytes = (mib << 20) as usize;
    let blocks = (bytes >> shift) as u64;
    let mut model = vec![0u8; bytes];
    let mut rng = Rng(seed);
    for round in 0..40 {
        // Up to 8 writes in flight on each queue, never overlapping each
        // other (their order would be the host's to choose).
        let mut taken: Vec<(u64, u64)> = Vec::new();
        let mut pending: Vec<HashMap<u16, (u64, Vec<u8>)>> = vec![HashMap::new(), HashMap::new()];
        for i in 0..16 {
            let q = i % 2;
            let max = if rng.below(3) == 0 { 1 << 20 } else { 16 << 10 };
            let nlb = (1 + rng.below((max >> shift) as u64)).min(blocks);
            let slba = rng.below(blocks - nlb + 1);
            if taken
                .iter()
                .any(|&(s0, n0)| slba < s0 + n0 && s0 < slba + nlb)
            {
                continue;
            }
            taken.push((slba, nlb));
            let data = rng.data((nlb as usize) << shift);
            let cid = queues[q]
                .submit(
                    Host::rw(io::WRITE, 1, slba, nlb as u32),
                    Some(data.clone()),
                    0,
                )
                .unwrap();
            pending[q].insert(cid, (slba, data));
        }
        for (q, p) in pending.iter_mut().enumerate() {
            while !p.is_empty() {
                let c = queues[q].reap().unwrap();
                assert_eq!(c.status, 0, "write failed: {c:?}");
                let (slba, data) = p.remove(&c.cid).expect("completion of a write in flight");
                let at = (slba as usize) << shift;
                model[at..at + data.len()].copy_from_slice(&data);
            }
        }
        // Reads, pipelined too.
        let mut reads: HashMap<u16, (usize, usize)> = HashMap::new();
        for _ in 0..8 {
            let nlb = 1 + rng.below((256 << 10) >> shift);
            let slba = rng.below(blocks - nlb + 1);
            let len = (nlb as usize) << shift;
            let cid = queues[round % 2]
                .submit(Host::rw(io::READ, 1, slba, nlb as u32), None, len)
                .unwrap();
            reads.insert(cid, ((slba as usize) << shift, len));
        }
        while !reads.is_empty() {
            let c = queues[round % 2].reap().unwrap();
            assert_eq!(c.status, 0);
            let (at, len) = reads.remove(&c.cid).unwrap();
            assert!(
                c.data == model[at..at + len],
                "read at {at}+{len} differs (round {round})"
            );
        }
    }
    let q = &mut queues[0];
    assert_eq!(q.run(Sqe::new(io::FLUSH, 1), None, 0).unwrap().status, 0);
    assert_eq!(
        q.run(Sqe::new(io::FLUSH, 0xFFFF_FFFF), None, 0)
            .unwrap()
            .status,
        0
    );
    // Write Zeroes, then Deallocate: both read back as zeros.
    let c = q.run(Host::rw(io::WRITE_ZEROES, 1, 3, 5), None, 0).unwrap();
    assert_eq!(c.status, 0);
    model[3 << shift..8 << shift].fill(0);
    // A whole page of ranges, as Linux may send, of which NR + 1 count.
    let mut ranges = vec![0xFFu8; 4096];
    ranges[..32].fill(0);
    ranges[4..8].copy_from_slice(&7u32.to_le_bytes());
    ranges[8..16].copy_from_slice(&100u64.to_le_bytes());
    ranges[20..24].copy_from_slice(&2u32.to_le_bytes());
    ranges[24..32].copy_from_slice(&(blocks - 2).to_le_bytes());
    let mut dsm = Sqe::new(io::DSM, 1);
    dsm.0[40] = 1; // two ranges
    dsm.0[44] = 0x4; // deallocate
    assert_eq!(q.run(dsm, Some(ranges), 0).unwrap().status, 0);
    model[100 << shift..107 << shift].fill(0);
    let end = blocks as usize;
    model[(end - 2) << shift..end << shift].fill(0);
    for (slba, nlb) in [(0u64, 16u32), (96, 16), (blocks - 4, 4)] {
        let c = q.read(1, slba, shift, nlb).unwrap();
        let at = (slba as usize) << shift;
        assert!(
            c.data == model[at..at + c.data.len()],
            "zeroed range at {slba}"
        );
    }
    // Out of range and unknown namespace: errors, the queue goes on.
    assert_eq!(q.read(1, blocks, shift, 1).unwrap().sct_sc(), (0, 0x80));
    assert_eq!(q.read(2, 0, shift, 1).unwrap().sct_sc(), (0, 0x0B));
    assert_eq!(q.read(1, 0, shift, 1).unwrap().status, 0);
    s.stop();
}

#[test]
fn pipelined_writes_and_reads_verify() {
    verify_workload(Digests::default(), 4096, 7);
}

#[test]
fn digests_and_512_byte_blocks() {
    verify_workload(
        Digests {
            header: true,
            data: true,
        },
        512,
        11,
    );
}

#[test]
fn a_bad_data_digest_fails_the_command_not_the_queue() {
    let d = Digests {
        header: true,
        data: true,
    };
    let (_e, s) = node(4096, 16);
    let a = admin_queue(s.addr(), d, 1, 0);
    let mut q = io_queue(s.addr(), d, a.cntlid, 1);
    assert_eq!(q.write(1, 0, 12, vec![1; 4096]).unwrap().status, 0);
    // A write capsule whose data digest is wrong.
    let mut b = vec![4u8, 3, 72, 76];
    b.extend_from_slice(&(72u32 + 4 + 4096 + 4).to_le_bytes());
    let mut s0 = Host::rw(io::WRITE, 1, 0, 1);
    s0.0[1] = 0x40;
    s0.0[2] = 99;
    s0.0[32..36].copy_from_slice(&4096u32.to_le_bytes());
    s0.0[39] = 0x01;
    b.extend_from_slice(&s0.0);
    let c = crc32c::crc32c(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b.extend_from_slice(&[2u8; 4096]);
    b.extend_from_slice(&0xDEADu32.to_le_bytes());
    q.send_raw(&b).unwrap();
    let c = q.reap().unwrap();
    assert_eq!((c.cid, c.sct_sc()), (99, (0, 0x22)));
    // Nothing was written; the queue goes on.
    assert_eq!(q.read(1, 0, 12, 1).unwrap().data, vec![1; 4096]);
    s.stop();
}

#[test]
fn a_silent_host_is_torn_down_after_its_keep_alive_timeout() {
    let (_e, s) = node(4096, 16);
    let mut a = admin_queue(s.addr(), Digests::default(), 1, 400);
    let mut q = io_queue(s.addr(), Digests::default(), a.cntlid, 1);
    // Keep-alives every 100 ms hold it up past its timeout.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            a.run(Sqe::new(admin::KEEP_ALIVE, 0), None, 0)
                .unwrap()
                .status,
            0
        );
    }
    assert_eq!(q.read(1, 0, 12, 1).unwrap().status, 0);
    // Then silence: both queues close.
    let t0 = Instant::now();
    assert!(a.read_pdu().is_err(), "the admin queue closes");
    assert!(q.read_pdu().is_err(), "its I/O queue closes");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "torn down early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "torn down late: {took:?}");
    assert_eq!(s.target().controllers(), 0);
    s.stop();
}

#[test]
fn malformed_pdus_end_the_connection_cleanly() {
    let (_e, s) = node(4096, 16);
    let seed: u64 = std::env::var("FLINT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED);
    let rounds: usize = std::env::var("FLINT_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed);
    // A valid stream to mutate: ICReq, Connect, Property Set CC, a write.
    let valid = {
        let mut v = vec![0u8; 128];
        v[2] = 128;
        v[4] = 128;
        v
    };
    for round in 0..rounds {
        if std::env::var("FLINT_FUZZ_TRACE").is_ok() {
            eprintln!("round {round}");
        }
        let mut h = Host::open(s.addr(), Digests::default()).unwrap();
        // Random PDUs after a good ICReq, or a mangled ICReq.
        let mut b = if rng.below(4) == 0 {
            let mut v = valid.clone();
            let i = rng.below(16) as usize;
            v[i] ^= 1 << rng.below(8);
            v
        } else {
            Vec::new()
        };
        for _ in 0..1 + rng.below(3) {
            let kind = [0u8, 1, 2, 3, 4, 5, 6, 7, 9, 0xFF][rng.below(10) as usize];
            let hlen = [8u8, 24, 72, 128, 255, 0][rng.below(6) as usize];
            let extra = rng.below(200) as usize;
            let plen = match rng.below(4) {
                0 => u32::MAX,
                1 => rng.below(64) as u32,
                _ => (usize::from(hlen) + extra) as u32,
            };
            let mut p = vec![kind, rng.next() as u8, hlen, rng.next() as u8];
            p.extend_from_slice(&plen.to_le_bytes());
            p.extend((0..usize::from(hlen).saturating_sub(8) + extra).map(|_| rng.next() as u8));
            b.extend_from_slice(&p);
        }
        if h.send_raw(&b).is_err() || h.finish_sending().is_err() {
            continue;
        }
        // The target answers or terminates, and closes at the end of the
        // stream; it never dies.
        while h.read_pdu().is_ok() {}
        drop(h);
        if round % 50 == 0 {
            let a = admin_queue(s.addr(), Digests::default(), 1, 0);
            let mut q = io_queue(s.addr(), Digests::default(), a.cntlid, 1);
            assert_eq!(q.read(1, 0, 12, 1).unwrap().status, 0, "round {round}");
        }
    }
    let a = admin_queue(s.addr(), Digests::default(), 1, 0);
    let mut q = io_queue(s.addr(), Digests::default(), a.cntlid, 1);
    assert_eq!(q.write(1, 0, 12, vec![3; 4096]).unwrap().status, 0);
    assert!(
        s.target()
            .stats
            .terminated
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    s.stop();
}

// ---- acknowledged writes survive SIGKILL of the target ----

const KILL_DIR: &str = "FLINT_NVMF_KILL_DIR";
const KILL_BLOCK: u32 = 512;
const KILL_MIB: u64 = 24;

/// The target in a child process: opens (formatting on the first round)
/// file devices under the directory it is given, serves, prints its port.
fn kill_child(dir: &Path) -> ! {
    let devs = file_devices(dir, 3, 96);
    let mut e = engine();
    if e.open(present(&devs)).is_err() {
        e.format(devs.clone(), small_config(), false).unwrap();
        e.open(present(&devs)).unwrap();
        e.fs_create("data", 2, 1, true, 1 << 30).unwrap();
    }
    let s = serve(Arc::new(e), KILL_BLOCK, KILL_MIB);
    println!("LISTENING {}", s.addr().port());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn spawn_child(test: &str, dir: &Path) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(KILL_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let port = loop {
        let l = lines.next().expect("the child printed its port").unwrap();
        // libtest may have begun the line ("test NAME ... ").
        if let Some(i) = l.find("LISTENING ") {
            break l[i + 10..].trim().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Connects, retrying while the target restarts.
fn reconnect(addr: SocketAddr) -> (Host, Host) {
    let a = admin_queue(addr, Digests::default(), 1, 0);
    let q = io_queue(addr, Digests::default(), a.cntlid, 1);
    (a, q)
}

#[test]
fn acknowledged_writes_survive_sigkill_of_the_target() {
    let test = "acknowledged_writes_survive_sigkill_of_the_target";
    if let Ok(dir) = std::env::var(KILL_DIR) {
        kill_child(Path::new(&dir));
    }
    let rounds: u64 = std::env::var("FLINT_NVMF_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let shift = KILL_BLOCK.trailing_zeros() as u8;
    let bytes = (KILL_MIB << 20) as usize;
    let blocks = (bytes >> shift) as u64;
    // What every acknowledged write left; bytes a write in flight at the
    // kill covered may hold either its data or what was there.
    let mut model = vec![0u8; bytes];
    let mut rng = Rng(0xC0FFEE);
    let mut acked_total = 0usize;
    for round in 0..=rounds {
        let (mut child, addr) = spawn_child(test, dir.path());
        eprintln!("round {round}: target on {addr}");
        let (_a, mut q) = reconnect(addr);
        eprintln!("round {round}: connected");
        // Everything acknowledged so far reads back.
        for at in (0..bytes).step_by(1 << 20) {
            let c = q
                .read(1, (at >> shift) as u64, shift, (1 << 20) >> shift)
                .unwrap();
            assert_eq!(c.status, 0);
            if c.data != model[at..at + (1 << 20)] {
                let i = (0..1 << 20).find(|&i| c.data[i] != model[at + i]).unwrap();
                panic!(
                    "round {round}: byte {} differs after restart ({} acknowledged writes so far)",
                    at + i,
                    acked_total
                );
            }
        }
        if round == rounds {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        // Write, 8 in flight, unaligned to 4 KiB (512-byte blocks), until
        // the kill; the writer keeps going until the target is gone.
        let kill_after = Duration::from_millis(300 + rng.below(700));
        let t0 = Instant::now();
        let mut inflight: HashMap<u16, (usize, Vec<u8>)> = HashMap::new();
        let mut killed = false;
        loop {
            if !killed && t0.elapsed() >= kill_after {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed = true;
            }
            while inflight.len() < 8 {
                let nlb = 1 + rng.below(64);
                let slba = rng.below(blocks - nlb + 1);
                let at = (slba as usize) << shift;
                let len = (nlb as usize) << shift;
                if inflight
                    .values()
                    .any(|(a0, d0)| at < a0 + d0.len() && *a0 < at + len)
                {
                    continue;
                }
                let data = rng.data(len);
                match q.submit(
                    Host::rw(io::WRITE, 1, slba, nlb as u32),
                    Some(data.clone()),
                    0,
                ) {
                    Ok(cid) => {
                        inflight.insert(cid, (at, data));
                    }
                    Err(_) => break,
                }
            }
            match q.reap() {
                Ok(c) => {
                    assert_eq!(c.status, 0, "write failed: {c:?}");
                    let (at, data) = inflight.remove(&c.cid).unwrap();
                    model[at..at + data.len()].copy_from_slice(&data);
                    acked_total += 1;
                }
                Err(_) => break,
            }
        }
        assert!(killed, "the target failed before it was killed");
        eprintln!(
            "round {round}: killed; {} writes were in flight",
            inflight.len()
        );
        // Unacknowledged writes: whatever of them landed, the model takes
        // from the device at the next round's check — read it there.
        let (mut c2, addr2) = spawn_child(test, dir.path());
        let (_a2, mut q2) = reconnect(addr2);
        for (at, data) in inflight.values() {
            let c = q2
                .read(
                    1,
                    (*at >> shift) as u64,
                    shift,
                    (data.len() >> shift) as u32,
                )
                .unwrap();
            // Each 512-byte block is old or new, never anything else.
            for (i, blk) in c.data.chunks(KILL_BLOCK as usize).enumerate() {
                let o = at + i * KILL_BLOCK as usize;
                let new = &data[i * KILL_BLOCK as usize..(i + 1) * KILL_BLOCK as usize];
                assert!(
                    blk == &model[o..o + KILL_BLOCK as usize] || blk == new,
                    "round {round}: a block in flight at the kill is neither old nor new"
                );
            }
            model[*at..*at + data.len()].copy_from_slice(&c.data);
        }
        drop(q2);
        let _ = c2.kill();
        let _ = c2.wait();
        eprintln!("round {round}: {acked_total} writes acknowledged so far");
    }
    assert!(acked_total > 0);
}
