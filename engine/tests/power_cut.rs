//! Power cuts at exact I/Os: every device fails at once after a chosen
//! number of commands (mid-stripe, mid-journal, mid-checkpoint, mid-GC,
//! sometimes again during recovery). After each cut the files must be the
//! acknowledged state plus a prefix of the unacknowledged operations, and
//! the metadata must pass its consistency check.

mod common;

use common::{engine, memory_devices, present, small_config, Rng};
use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
use flint_dataplane::bdev::BlockDevice;
use flint_engine::store::StoreConfig;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Write(usize, u64, Vec<u8>),
    Truncate(usize, u64),
}

fn apply(files: &mut [Vec<u8>], op: &Op) {
    match op {
        Op::Write(f, off, d) => {
            let end = *off as usize + d.len();
            if files[*f].len() < end {
                files[*f].resize(end, 0);
            }
            files[*f][*off as usize..end].copy_from_slice(d);
        }
        Op::Truncate(f, size) => files[*f].resize(*size as usize, 0),
    }
}

fn file_of(op: &Op) -> usize {
    match op {
        Op::Write(f, ..) | Op::Truncate(f, _) => *f,
    }
}

fn on_file_zero(op: &Op) -> Op {
    match op {
        Op::Write(_, off, d) => Op::Write(0, *off, d.clone()),
        Op::Truncate(_, size) => Op::Truncate(0, *size),
    }
}

/// Whether `actual` is `acked` plus some prefix of `pending`.
fn prefix_matches(acked: &[Vec<u8>], pending: &[Op], actual: &[Vec<u8>]) -> bool {
    let mut cand = acked.to_vec();
    if cand == actual {
        return true;
    }
    for op in pending {
        apply(&mut cand, op);
        if cand == actual {
            return true;
        }
    }
    false
}

#[test]
fn power_cuts_at_any_io_keep_acknowledged_state() {
    power_cuts(1, 2024);
}

#[test]
fn power_cuts_with_four_shards_keep_acknowledged_state() {
    power_cuts(4, 4048);
}

fn power_cuts(shards: u32, seed: u64) {
    // FLINT_POWER_SEED and FLINT_POWER_ROUNDS widen the search locally.
    let seed = std::env::var("FLINT_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(seed);
    let rounds: usize = std::env::var("FLINT_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 32)
        .into_iter()
        .map(|d| FaultyDevice::wrap_shared(d, plan.clone()) as Arc<dyn BlockDevice>)
        .collect();
    let cfg = StoreConfig {
        shards,
        ..small_config()
    };
    let mut e = engine();
    e.format(devs.clone(), cfg, false).unwrap();
    e.open(present(&devs)).unwrap();
    let fs = e.fs_create("data", 3, 2, true, 1 << 40).unwrap();
    let inos: Vec<u64> = (0..3)
        .map(|i| e.create(fs, &format!("f{i}")).unwrap())
        .collect();
    e.sync().unwrap();
    let mut rng = Rng(seed);
    let mut acked: Vec<Vec<u8>> = vec![Vec::new(); 3];
    let mut cur = acked.clone();
    for round in 0..rounds {
        let budget = rng.below(1500) as i64;
        plan.fail_after(budget);
        let mut pending: Vec<Op> = Vec::new();
        loop {
            let f = rng.below(3) as usize;
            let ino = inos[f];
            let ok = match rng.below(12) {
                0 => {
                    let size = rng.below(cur[f].len() as u64 + 16_384);
                    let op = Op::Truncate(f, size);
                    pending.push(op.clone());
                    let ok = e.truncate(ino, size).is_ok();
                    apply(&mut cur, &op);
                    ok
                }
                k @ (1..=3) => {
                    // With shared blocks a shard's own sync is not the
                    // engine's durability point: the engine's sync is.
                    let r = if k == 3 {
                        e.broadcast(|s| s.gc(2).map(|_| ())).and_then(|_| e.sync())
                    } else {
                        e.sync()
                    };
                    if r.is_ok() {
                        for op in pending.drain(..) {
                            apply(&mut acked, &op);
                        }
                    }
                    r.is_ok()
                }
                _ => {
                    let off = rng.below(cur[f].len() as u64 + 32_768);
                    let len = 1 + rng.below(40_000) as usize;
                    let data = rng.data(len);
                    let op = Op::Write(f, off, data.clone());
                    pending.push(op.clone());
                    let ok = e.write(ino, off, data).is_ok();
                    apply(&mut cur, &op);
                    ok
                }
            };
            if !ok {
                break;
            }
        }
        drop(e);
        // Sometimes the power fails again while recovering.
        if rng.below(3) == 0 {
            plan.fail_after(rng.below(40) as i64);
            let mut again = engine();
            let _ = again.open(present(&devs));
            drop(again);
        }
        plan.clear();
        e = engine();
        e.open(present(&devs)).unwrap();
        let problems: Vec<String> = e.broadcast(|s| s.fsck()).unwrap().concat();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        let actual: Vec<Vec<u8>> = inos
            .iter()
            .map(|&i| e.read(i, 0, 1 << 30).unwrap())
            .collect();
        // One shard journals in operation order, so the files are the
        // acknowledged state plus a prefix of the unacknowledged operations.
        // Shards journal independently, so with several the prefix holds
        // for each file (a file lives on one shard).
        let matched = if shards == 1 {
            prefix_matches(&acked, &pending, &actual)
        } else {
            (0..inos.len()).all(|f| {
                let mine: Vec<Op> = pending
                    .iter()
                    .filter(|op| file_of(op) == f)
                    .cloned()
                    .collect();
                let one = |v: &[Vec<u8>]| vec![v[f].clone()];
                let renumber: Vec<Op> = mine.iter().map(on_file_zero).collect();
                prefix_matches(&one(&acked), &renumber, &one(&actual))
            })
        };
        if !matched {
            for (f, (a, b)) in acked.iter().zip(&actual).enumerate() {
                let first = a.iter().zip(b.iter()).position(|(x, y)| x != y);
                eprintln!(
                    "DEBUG file {f}: acked {} actual {} first diff {first:?}",
                    a.len(),
                    b.len()
                );
            }
            for op in &pending {
                match op {
                    Op::Write(f, o, d) => {
                        eprintln!("DEBUG pending write f{f} off {o} len {}", d.len())
                    }
                    Op::Truncate(f, s) => eprintln!("DEBUG pending truncate f{f} {s}"),
                }
            }
        }
        assert!(
            matched,
            "round {round} (cut after {budget} I/Os): files are neither the acknowledged \
             state nor it plus a prefix of the {} unacknowledged operations",
            pending.len()
        );
        acked = actual.clone();
        cur = actual;
    }
}
