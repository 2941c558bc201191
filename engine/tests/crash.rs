//! Crash safety: a child process writes under load from several threads
//! and is SIGKILLed at a random moment, many times; after each restart
//! every write it had acknowledged (the write returned; no sync) reads back
//! intact — with one shard, and
//! with four (where blocks live in the shared pools of their fingerprints'
//! owners and files' maps on other shards refer to them).

mod common;

use common::{engine, file_devices, present, small_config, Rng};
use flint_engine::store::StoreConfig;
use std::path::Path;
use std::time::{Duration, Instant};

const CHILD: &str = "FLINT_CRASH_CHILD_DIR";
const ROUND: &str = "FLINT_CRASH_ROUND";
const DEVICES: usize = 6;
const DEVICE_MIB: u64 = 128;

/// The bytes of an acknowledged write: a function of its seed, sometimes
/// compressible, sometimes shared with other writes (dedup).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let s = if seed.is_multiple_of(4) { 4 } else { seed };
    let mut r = Rng(s * 0x9e37_79b9 + 1);
    (0..len)
        .map(|i| {
            if s.is_multiple_of(3) {
                (i / 64) as u8 ^ s as u8
            } else {
                r.next() as u8
            }
        })
        .collect()
}

/// Writers in flight together in the child: each writes every
/// `WRITERS`-th record of one file, so neighbouring records (unaligned,
/// sharing 4 KiB blocks) come from different threads at once.
const WRITERS: u64 = 3;

fn child(dir: &Path, round: u64) -> ! {
    let devs = file_devices(dir, DEVICES, DEVICE_MIB);
    let mut e = engine();
    // The seal timer, as an appliance runs: it also collects the stripes
    // that checkpoints sealed part-full once space runs low.
    e.open_with(present(&devs), Some(Duration::from_millis(20)))
        .expect("child opens the engine");
    let fs = e.fs_by_name("crash").unwrap().expect("fs exists");
    let ino = e.create(fs, &format!("round{round}")).unwrap();
    // End the test harness's "test <name> ... " line first.
    println!();
    let e = std::sync::Arc::new(e);
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(round * 7919 + 13 + t);
                let mut j = t;
                loop {
                    // Records of 1..48 KiB at unaligned offsets: record j
                    // starts where j - 1 ends (a gap of 0-2000 bytes).
                    let len = 1 + (j * 7_717 % (48 << 10)) as usize;
                    let off = j * (50 << 10) + j % 3 * 1000 + 123;
                    let seed = rng.below(1 << 20);
                    e.write(ino, off, pattern(seed, len)).unwrap();
                    // Returned: acknowledged, so durable (no sync).
                    println!("ACK {ino} {off} {len} {seed}");
                    if rng.below(50) == 0 {
                        e.sync().unwrap();
                    }
                    j += WRITERS;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(1)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    sigkill_rounds("acknowledged_writes_survive_sigkill", 1, 12);
}

#[test]
fn acknowledged_writes_survive_sigkill_with_four_shards() {
    sigkill_rounds("acknowledged_writes_survive_sigkill_with_four_shards", 4, 8);
}

fn sigkill_rounds(test: &str, shards: u32, rounds: u64) {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD), std::env::var(ROUND)) {
        child(Path::new(&dir), round.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        let cfg = StoreConfig {
            shards,
            checkpoint_blocks: 4096,
            ..small_config()
        };
        e.format(devs.clone(), cfg, false).unwrap();
        e.open(present(&devs)).unwrap();
        e.fs_create("crash", 4, 2, true, 1 << 40).unwrap();
        e.close().unwrap();
    }
    let rounds: u64 = std::env::var("FLINT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(rounds);
    let mut acked: Vec<(u64, u64, usize, u64)> = Vec::new();
    let mut productive = 0;
    let mut rng = Rng(4242);
    for round in 0..rounds {
        // Let it get going (engine open takes a moment), then kill it at a
        // random point in its write/sync loop.
        let t0 = Instant::now();
        let printed = common::run_and_kill(
            test,
            &[
                (CHILD, dir.path().display().to_string()),
                (ROUND, round.to_string()),
            ],
            Duration::from_millis(150 + rng.below(500)),
        );
        let lines: Vec<(u64, u64, usize, u64)> = printed
            .iter()
            .filter_map(|line| {
                let rest = &line[line.find("ACK ")? + 4..];
                let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                (v.len() == 4).then(|| (v[0], v[1], v[2] as usize, v[3]))
            })
            .collect();
        productive += usize::from(!lines.is_empty());
        acked.extend(lines);
        eprintln!(
            "round {round}: killed after {:?}, {} writes acknowledged so far",
            t0.elapsed(),
            acked.len()
        );

        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        e.open(present(&devs)).unwrap();
        for &(ino, off, len, seed) in &acked {
            let got = e
                .read(ino, off, len)
                .unwrap_or_else(|err| panic!("round {round}: read of acked write failed: {err}"));
            assert!(
                got == pattern(seed, len),
                "round {round}: acknowledged write ino {ino} off {off} len {len} damaged"
            );
        }
        let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        e.close().unwrap();
    }
    assert!(
        productive * 4 >= rounds as usize * 3,
        "only {productive} of {rounds} rounds acknowledged writes"
    );
    assert!(
        acked.len() > 20,
        "the child acknowledged too little to test anything"
    );
}
