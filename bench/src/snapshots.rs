//! `flint-bench snapshots`: what a snapshot costs. Fills a file system
//! with `--gib` GiB (1 MiB writes) on file-backed devices (`--memory`:
//! RAM devices, where latency is the engine's, not the disk's), then
//!
//! - times snapshot creation at 1 GiB and at the full size, beside a
//!   plain checkpoint of the same state in the same run (a snapshot is a
//!   checkpoint plus one record, so the ratio shows the rest is O(1));
//! - times 4 KiB random overwrites (each acknowledged durable) with no
//!   snapshot, then with `--snapshots` of them (taken among the same
//!   overwrites, so each holds blocks the live file has since replaced),
//!   then with none again once they are deleted (the file as aged), and
//!   prints p50/p99 beside each other.

use std::sync::Arc;
use std::time::Instant;

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Milliseconds of a snapshot creation and of a plain checkpoint, median
/// of `n` each, with a small write before each so both have work.
fn creation(e: &Engine, fs: u32, ino: u64, tag: &str, n: usize) -> Result<(f64, f64), String> {
    let err = |x: flint_engine::store::StoreError| x.to_string();
    let (mut snap, mut ckpt) = (Vec::new(), Vec::new());
    for i in 0..n {
        e.write(ino, (i as u64) << 12, vec![i as u8; 4096])
            .map_err(err)?;
        e.sync().map_err(err)?;
        let t = Instant::now();
        e.broadcast(|s| s.checkpoint()).map_err(err)?;
        ckpt.push(ms(t));
        e.write(ino, (i as u64) << 12, vec![!(i as u8); 4096])
            .map_err(err)?;
        e.sync().map_err(err)?;
        let t = Instant::now();
        e.snapshot_create(fs, &format!("{tag}-{i}")).map_err(err)?;
        snap.push(ms(t));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut snap), median(&mut ckpt)))
}

/// p50 and p99 in microseconds of `n` random 4 KiB overwrites within the
/// first `span` bytes; with `snap_every`, a snapshot is taken after every
/// so many (named `tag`-N).
fn overwrites(e: &Engine, ino: u64, span: u64, n: usize, seed: u64) -> Result<(f64, f64), String> {
    let mut rng = Rng::new(seed);
    let mut lat = Vec::with_capacity(n);
    let block = vec![0x5au8; 4096];
    for _ in 0..n {
        let off = (rng.next() % (span >> 12)) << 12;
        let t = Instant::now();
        e.write(ino, off, block.clone())
            .map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat[n / 2], lat[n * 99 / 100]))
}

/// Entry point.
pub fn main(mut a: Args) -> Result<(), String> {
    let dir: String = a.get("dir", "/var/tmp/flint-bench-snap".to_string())?;
    let gib = a.get("gib", 10u64)?.max(1);
    let snaps = a.get("snapshots", 100usize)?;
    let writes = a.get("writes", 20_000usize)?.max(100);
    let memory = a.flag("memory");
    let json = a.flag("json");
    a.finish()?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let devices = 6usize;
    // Room for the data at 4+2 with a quarter to spare.
    let dev_mib = (gib << 10) * 6 / 4 / devices as u64 * 5 / 4 + 512;
    let devs: Vec<Arc<dyn BlockDevice>> = (0..devices)
        .map(|i| {
            let backend = if memory {
                Backend::Memory
            } else {
                Backend::Uring
            };
            let mut s = DeviceSpec::new(&format!("snap{i}"), backend);
            if !memory {
                s.path = Some(dir.join(format!("dev{i}.img")));
            }
            s.size = Some(ByteSize(dev_mib << 20));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut e = Engine::start(&ReactorConfig::default()).map_err(|e| e.to_string())?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let err = |x: flint_engine::store::StoreError| x.to_string();
    let fs = e.fs_create("snap", 4, 2, false, u64::MAX).map_err(err)?;
    let ino = e.create(fs, "data").map_err(err)?;
    let mut rng = Rng::new(9);
    let pieces: Vec<Vec<u8>> = (0..8)
        .map(|_| {
            let mut c = vec![0u8; 1 << 20];
            for w in c.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
            c
        })
        .collect();
    let fill = |from: u64, to: u64| -> Result<(), String> {
        for i in from..to {
            e.write(ino, i << 20, pieces[(i % 8) as usize].clone())
                .map_err(err)?;
        }
        e.sync().map_err(err)
    };
    let t = Instant::now();
    fill(0, 1024)?;
    let (snap_1g, ckpt_1g) = creation(&e, fs, ino, "at1g", 5)?;
    fill(1024, gib << 10)?;
    let fill_s = t.elapsed().as_secs_f64();
    let (snap_full, ckpt_full) = creation(&e, fs, ino, "full", 5)?;
    for s in e.snapshot_list(Some(fs)).map_err(err)? {
        e.snapshot_delete(fs, &s.name).map_err(err)?;
    }
    // Overwrites with none, then with `snaps` snapshots among them.
    let span = 1 << 30;
    let (p50_0, p99_0) = overwrites(&e, ino, span, writes, 1)?;
    for i in 0..snaps {
        overwrites(&e, ino, span, 200, 100 + i as u64)?;
        e.snapshot_create(fs, &format!("s{i}")).map_err(err)?;
    }
    let (p50_n, p99_n) = overwrites(&e, ino, span, writes, 1)?;
    let held = e.snapshot_list(Some(fs)).map_err(err)?.len();
    // None again, on the file as aged as it is now (the first baseline ran
    // on a fresher one).
    for s in e.snapshot_list(Some(fs)).map_err(err)? {
        e.snapshot_delete(fs, &s.name).map_err(err)?;
    }
    overwrites(&e, ino, span, 200 * snaps, 7)?;
    let (p50_a, p99_a) = overwrites(&e, ino, span, writes, 1)?;
    let _ = e.close();
    for i in 0..devices {
        let _ = std::fs::remove_file(dir.join(format!("dev{i}.img")));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "gib": gib, "fill_s": fill_s,
                "create_ms_1g": snap_1g, "checkpoint_ms_1g": ckpt_1g,
                "create_ms_full": snap_full, "checkpoint_ms_full": ckpt_full,
                "snapshots": held, "p50_us_none": p50_0, "p99_us_none": p99_0,
                "p50_us_snapshots": p50_n, "p99_us_snapshots": p99_n,
                "p50_us_none_after": p50_a, "p99_us_none_after": p99_a,
            })
        );
        return Ok(());
    }
    println!(
        "snapshots: {gib} GiB file system (4+2, 6 {} devices, filled in {fill_s:.0} s)",
        if memory { "memory" } else { "file-backed" }
    );
    let mut t = Table::new(&["at", "snapshot create ms", "checkpoint ms", "ratio"]);
    t.row(vec![
        "1 GiB".into(),
        format!("{snap_1g:.1}"),
        format!("{ckpt_1g:.1}"),
        ratio(snap_1g, ckpt_1g),
    ]);
    t.row(vec![
        format!("{gib} GiB"),
        format!("{snap_full:.1}"),
        format!("{ckpt_full:.1}"),
        ratio(snap_full, ckpt_full),
    ]);
    print!("{t}");
    println!(
        "creation at {gib} GiB vs at 1 GiB: {}",
        ratio(snap_full, snap_1g)
    );
    let mut t = Table::new(&["4 KiB overwrites", "p50 us", "p99 us"]);
    t.row(vec![
        "no snapshot".into(),
        format!("{p50_0:.0}"),
        format!("{p99_0:.0}"),
    ]);
    t.row(vec![
        format!("{held} snapshots"),
        format!("{p50_n:.0}"),
        format!("{p99_n:.0}"),
    ]);
    t.row(vec![
        "none again (deleted, as aged)".into(),
        format!("{p50_a:.0}"),
        format!("{p99_a:.0}"),
    ]);
    print!("{t}");
    let base = (p99_0 + p99_a) / 2.0;
    println!(
        "p99 with {held} snapshots / none (mean of before and after): {} (target <= 1.10x); \
         / none before {}, / none after {}",
        ratio(p99_n, base),
        ratio(p99_n, p99_0),
        ratio(p99_n, p99_a)
    );
    Ok(())
}
