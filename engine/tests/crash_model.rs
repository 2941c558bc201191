//! Crash safety with overwrites, truncation and garbage collection: a child
//! process runs random operations on a few files and prints each operation
//! before it runs and `SYNCED` after every sync returns; it is SIGKILLed at
//! random moments. After each restart the files must equal the
//! acknowledged state plus some prefix of the operations that were not yet
//! acknowledged — nothing acknowledged lost, nothing torn.

mod common;

use common::{engine, file_devices, present, small_config, Rng};
use std::path::Path;
use std::time::Duration;

const CHILD: &str = "FLINT_MODEL_CHILD_DIR";
const ROUND: &str = "FLINT_MODEL_ROUND";
const DEVICES: usize = 5;
const DEVICE_MIB: u64 = 48;
const FILES: usize = 3;

#[derive(Debug, Clone, Copy)]
enum Op {
    Write {
        file: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        file: usize,
        size: u64,
    },
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed * 0x9e37_79b9 + 7);
    let text = seed.is_multiple_of(2);
    (0..len)
        .map(|i| {
            if text {
                b"model check "[i % 12] ^ (seed as u8 & 3)
            } else {
                r.next() as u8
            }
        })
        .collect()
}

fn apply(files: &mut [Vec<u8>], op: &Op) {
    match *op {
        Op::Write {
            file,
            off,
            len,
            seed,
        } => {
            let f = &mut files[file];
            let end = off as usize + len;
            if f.len() < end {
                f.resize(end, 0);
            }
            f[off as usize..end].copy_from_slice(&bytes(seed, len));
        }
        Op::Truncate { file, size } => files[file].resize(size as usize, 0),
    }
}

fn child(dir: &Path, round: u64) -> ! {
    let devs = file_devices(dir, DEVICES, DEVICE_MIB);
    let mut e = engine();
    e.open(present(&devs)).expect("child opens the engine");
    let fs = e
        .call(|s| Ok(s.fs_by_name("model")))
        .unwrap()
        .expect("fs exists");
    let inos: Vec<u64> = (0..FILES)
        .map(|i| {
            e.call(move |s| s.lookup(fs, &format!("f{i}")))
                .unwrap()
                .expect("file")
        })
        .collect();
    let mut sizes: Vec<u64> = inos
        .iter()
        .map(|&i| e.call(move |s| Ok(s.stat(i)?.size)).unwrap())
        .collect();
    let mut rng = Rng(round * 104_729 + 3);
    // The test harness has printed "test <name> ... " without a newline;
    // end that line so the first operation's line is not glued to it.
    println!();
    loop {
        let file = rng.below(FILES as u64) as usize;
        let ino = inos[file];
        match rng.below(12) {
            0 => {
                let size = rng.below(sizes[file] + 16_384);
                println!("OP T {file} {size}");
                e.call(move |s| s.truncate(ino, size)).unwrap();
                sizes[file] = size;
            }
            1 | 2 => {
                e.call(|s| s.sync()).unwrap();
                println!("SYNCED");
            }
            3 => {
                e.call(|s| {
                    s.gc(2)?;
                    s.sync()
                })
                .unwrap();
                println!("SYNCED");
            }
            _ => {
                let off = rng.below(sizes[file] + 32_768);
                let len = 1 + rng.below(40_000) as usize;
                let seed = rng.below(1 << 30);
                println!("OP W {file} {off} {len} {seed}");
                let data = bytes(seed, len);
                e.call(move |s| s.write(ino, off, &data)).unwrap();
                sizes[file] = sizes[file].max(off + len as u64);
            }
        }
    }
}

fn parse(line: &str) -> Option<Op> {
    let v: Vec<&str> = line[line.find("OP ")?..].split(' ').collect();
    let n = |i: usize| v.get(i).and_then(|x| x.parse::<u64>().ok());
    match *v.get(1)? {
        "W" => Some(Op::Write {
            file: n(2)? as usize,
            off: n(3)?,
            len: n(4)? as usize,
            seed: n(5)?,
        }),
        "T" => Some(Op::Truncate {
            file: n(2)? as usize,
            size: n(3)?,
        }),
        _ => None,
    }
}

#[test]
fn crashes_keep_acknowledged_state_and_lose_only_a_suffix() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD), std::env::var(ROUND)) {
        child(Path::new(&dir), round.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let inos: Vec<u64> = {
        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        e.format(devs.clone(), small_config(), false).unwrap();
        e.open(present(&devs)).unwrap();
        let inos = e
            .call(|s| {
                let fs = s.fs_create("model", 3, 2, true, 1 << 40)?;
                (0..FILES).map(|i| s.create(fs, &format!("f{i}"))).collect()
            })
            .unwrap();
        e.close().unwrap();
        inos
    };
    let rounds: u64 = std::env::var("FLINT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut state: Vec<Vec<u8>> = vec![Vec::new(); FILES];
    let mut rng = Rng(99);
    let mut total_ops = 0;
    for round in 0..rounds {
        let lines = common::run_and_kill(
            "crashes_keep_acknowledged_state_and_lose_only_a_suffix",
            &[
                (CHILD, dir.path().display().to_string()),
                (ROUND, round.to_string()),
            ],
            Duration::from_millis(150 + rng.below(450)),
        );
        // Acknowledged: every operation before the last SYNCED.
        let mut pending: Vec<Op> = Vec::new();
        for line in &lines {
            if line.ends_with("SYNCED") {
                for op in pending.drain(..) {
                    apply(&mut state, &op);
                    total_ops += 1;
                }
            } else if let Some(op) = parse(line) {
                pending.push(op);
            }
        }
        let devs = file_devices(dir.path(), DEVICES, DEVICE_MIB);
        let mut e = engine();
        e.open(present(&devs)).unwrap();
        let problems = e.call(|s| s.fsck()).unwrap();
        assert!(
            problems.is_empty(),
            "round {round}: after recovery: {problems:?}"
        );
        let actual: Vec<Vec<u8>> = inos
            .iter()
            .map(|&ino| e.call(move |s| s.read(ino, 0, usize::MAX >> 1)).unwrap())
            .collect();
        e.close().unwrap();
        // The files must be the acknowledged state plus a prefix of the
        // unacknowledged operations.
        let mut candidate = state.clone();
        let mut matched = actual == candidate;
        let mut used = 0;
        for (i, op) in pending.iter().enumerate() {
            if matched {
                break;
            }
            apply(&mut candidate, op);
            if actual == candidate {
                matched = true;
                used = i + 1;
            }
        }
        assert!(
            matched,
            "round {round}: files match neither the acknowledged state nor any prefix of the \
             {} unacknowledged operations",
            pending.len()
        );
        state = actual;
        eprintln!(
            "round {round}: {total_ops} acknowledged ops so far; {used} of {} pending ops had landed",
            pending.len()
        );
    }
    assert!(
        total_ops > 30,
        "too few operations were acknowledged to test anything"
    );
}
