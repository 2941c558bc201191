//! Power cuts at exact I/Os: every device fails at once after a chosen
//! number of commands (mid-stripe, mid-journal, mid-checkpoint, mid-GC,
//! sometimes again during recovery). After each cut the files must be the
//! acknowledged state plus a prefix of the unacknowledged operations, and
//! the metadata must pass its consistency check.

mod common;

use common::{engine, memory_devices, present, small_config, Rng};
use flint_dataplane::bdev::fault::{FaultPlan, FaultyDevice};
use flint_dataplane::bdev::BlockDevice;
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

#[test]
fn power_cuts_at_any_io_keep_acknowledged_state() {
    let plan = Arc::new(FaultPlan::default());
    let devs: Vec<Arc<dyn BlockDevice>> = memory_devices(5, 32)
        .into_iter()
        .map(|d| FaultyDevice::wrap_shared(d, plan.clone()) as Arc<dyn BlockDevice>)
        .collect();
    let mut e = engine();
    e.format(devs.clone(), small_config(), false).unwrap();
    e.open(present(&devs)).unwrap();
    let inos: Vec<u64> = e
        .call(|s| {
            let fs = s.fs_create("data", 3, 2, true, 1 << 40)?;
            (0..3).map(|i| s.create(fs, &format!("f{i}"))).collect()
        })
        .unwrap();
    e.call(|s| s.sync()).unwrap();
    let mut rng = Rng(2024);
    let mut acked: Vec<Vec<u8>> = vec![Vec::new(); 3];
    let mut cur = acked.clone();
    for round in 0..40 {
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
                    let ok = e.call(move |s| s.truncate(ino, size)).is_ok();
                    apply(&mut cur, &op);
                    ok
                }
                k @ (1..=3) => {
                    let r = if k == 3 {
                        e.call(|s| {
                            s.gc(2)?;
                            s.sync()
                        })
                    } else {
                        e.call(|s| s.sync())
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
                    let ok = e.call(move |s| s.write(ino, off, &data)).is_ok();
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
            let again = engine();
            let _ = again.open(present(&devs));
            drop(again);
        }
        plan.clear();
        e = engine();
        e.open(present(&devs)).unwrap();
        let problems = e.call(|s| Ok(s.fsck())).unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        let actual: Vec<Vec<u8>> = inos
            .iter()
            .map(|&i| e.call(move |s| s.read(i, 0, 1 << 30)).unwrap())
            .collect();
        let mut cand = acked.clone();
        let mut matched = actual == cand;
        for op in &pending {
            if matched {
                break;
            }
            apply(&mut cand, op);
            matched = actual == cand;
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
