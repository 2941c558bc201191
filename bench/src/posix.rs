//! `flint-bench posix`: the workloads of AI teams on a mounted file system
//! (`--dir`, a Flint mount) beside a baseline directory (`--baseline`, ext4
//! on the same disk), in the same run, through ordinary system calls:
//!
//! - **dataset epoch**: `--files` files of 10–500 KB (log-uniform, mean
//!   about 125 KB) in `--dirs` directories are written; then, caches
//!   dropped, listed by a recursive walk (readdir + stat of every entry);
//!   then, caches dropped again, every file read once in random order by
//!   `--readers` threads (a DataLoader with `num_workers`): files/s, MB/s;
//! - **checkpoint**: one `--ckpt-mib` file written in 1 MiB pieces and
//!   fsynced (save), then, caches dropped, read back (load);
//! - **metadata**: `--meta-files` empty files created, stat'ed, unlinked.
//!
//! Caches are dropped with `echo 3 > /proc/sys/vm/drop_caches` (root);
//! without root the cold passes are warm, and the output says so.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

struct Figures {
    write_mbs: f64,
    walk_fps: f64,
    read_fps: f64,
    read_mbs: f64,
    save_mbs: f64,
    load_mbs: f64,
    create_ops: f64,
    stat_ops: f64,
    unlink_ops: f64,
}

struct Plan {
    files: usize,
    dirs: usize,
    readers: usize,
    ckpt_mib: usize,
    meta_files: usize,
}

/// Drops the page cache, dentries and inodes; false when not allowed.
fn drop_caches() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn sizes(plan: &Plan) -> Vec<usize> {
    let mut rng = Rng::new(0x5eed);
    let (lo, hi) = (10_000f64.ln(), 500_000f64.ln());
    (0..plan.files)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            (lo + u * (hi - lo)).exp() as usize
        })
        .collect()
}

fn path_of(root: &Path, plan: &Plan, i: usize) -> PathBuf {
    root.join(format!("d{:04}", i % plan.dirs))
        .join(format!("f{i:07}.bin"))
}

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn run(root: &Path, plan: &Plan) -> Result<Figures, String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let base = root.join("flint-bench-posix");
    if base.exists() {
        fs::remove_dir_all(&base).map_err(|e| io("clearing", &base, e))?;
    }
    fs::create_dir_all(&base).map_err(|e| io("creating", &base, e))?;
    for d in 0..plan.dirs {
        let p = base.join(format!("d{d:04}"));
        fs::create_dir(&p).map_err(|e| io("creating", &p, e))?;
    }
    // Dataset: write every file.
    let sizes = sizes(plan);
    let mut block = vec![0u8; 512_000];
    let mut rng = Rng::new(7);
    for b in block.chunks_mut(8) {
        b.copy_from_slice(&rng.next().to_le_bytes()[..b.len()]);
    }
    let t = Instant::now();
    let mut total = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let p = path_of(&base, plan, i);
        // Each file's bytes differ (no dedup between files).
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut f = File::create(&p).map_err(|e| io("creating", &p, e))?;
        f.write_all(&block[..n]).map_err(|e| io("writing", &p, e))?;
        total += n as u64;
    }
    let write_mbs = mbs(total, t.elapsed().as_secs_f64());
    // Walk: list every directory and stat every entry.
    drop_caches();
    let t = Instant::now();
    let mut seen = 0usize;
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| io("listing", &d, e))? {
            let e = e.map_err(|e| io("listing", &d, e))?;
            let md = fs::symlink_metadata(e.path()).map_err(|er| io("stat", &e.path(), er))?;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                seen += 1;
            }
        }
    }
    let walk_fps = seen as f64 / t.elapsed().as_secs_f64();
    if seen != plan.files {
        return Err(format!(
            "the walk of {} found {seen} files, not {}",
            base.display(),
            plan.files
        ));
    }
    // Epoch: every file once, in random order, by `readers` threads.
    let mut order: Vec<usize> = (0..plan.files).collect();
    let mut rng = Rng::new(11);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    drop_caches();
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let read: Result<Vec<u64>, String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..plan.readers)
            .map(|_| {
                s.spawn(|| -> Result<u64, String> {
                    let mut buf = Vec::with_capacity(512_000);
                    let mut got = 0u64;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = order.get(k) else {
                            return Ok(got);
                        };
                        let p = path_of(&base, plan, i);
                        buf.clear();
                        File::open(&p)
                            .and_then(|mut f| f.read_to_end(&mut buf))
                            .map_err(|e| io("reading", &p, e))?;
                        if buf.len() != sizes[i] || buf[..8] != (i as u64).to_le_bytes() {
                            return Err(format!("{} read back wrong", p.display()));
                        }
                        got += buf.len() as u64;
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| "a reader panicked".to_string())?)
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let read_bytes: u64 = read?.iter().sum();
    let (read_fps, read_mbs) = (plan.files as f64 / secs, mbs(read_bytes, secs));
    fs::remove_dir_all(&base).map_err(|e| io("removing", &base, e))?;
    // Checkpoint: save (1 MiB writes, fsync), load.
    fs::create_dir_all(&base).map_err(|e| io("creating", &base, e))?;
    let ck = base.join("checkpoint.pt");
    let mut piece = vec![0u8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = File::create(&ck).map_err(|e| io("creating", &ck, e))?;
        for i in 0..plan.ckpt_mib {
            piece[..8].copy_from_slice(&(i as u64).to_le_bytes());
            for (j, b) in piece[8..].chunks_mut(8).enumerate() {
                let v = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ j as u64;
                b.copy_from_slice(&v.to_le_bytes()[..b.len()]);
            }
            f.write_all(&piece).map_err(|e| io("writing", &ck, e))?;
        }
        f.sync_all().map_err(|e| io("fsync", &ck, e))?;
    }
    let save_mbs = mbs((plan.ckpt_mib as u64) << 20, t.elapsed().as_secs_f64());
    drop_caches();
    let t = Instant::now();
    {
        let f = File::open(&ck).map_err(|e| io("opening", &ck, e))?;
        for i in 0..plan.ckpt_mib {
            f.read_exact_at(&mut piece, (i as u64) << 20)
                .map_err(|e| io("reading", &ck, e))?;
            if piece[..8] != (i as u64).to_le_bytes() {
                return Err(format!("{} piece {i} read back wrong", ck.display()));
            }
        }
    }
    let load_mbs = mbs((plan.ckpt_mib as u64) << 20, t.elapsed().as_secs_f64());
    fs::remove_file(&ck).map_err(|e| io("removing", &ck, e))?;
    // Metadata: create, stat, unlink.
    let md = base.join("meta");
    fs::create_dir(&md).map_err(|e| io("creating", &md, e))?;
    let names: Vec<PathBuf> = (0..plan.meta_files)
        .map(|i| md.join(format!("m{i:07}")))
        .collect();
    let rate = |f: &dyn Fn(&Path) -> std::io::Result<()>, what: &str| -> Result<f64, String> {
        let t = Instant::now();
        for p in &names {
            f(p).map_err(|e| io(what, p, e))?;
        }
        Ok(names.len() as f64 / t.elapsed().as_secs_f64())
    };
    let create_ops = rate(&|p| File::create(p).map(|_| ()), "creating")?;
    drop_caches();
    let stat_ops = rate(&|p| fs::metadata(p).map(|_| ()), "stat")?;
    let unlink_ops = rate(&|p| fs::remove_file(p), "unlinking")?;
    fs::remove_dir_all(&base).map_err(|e| io("removing", &base, e))?;
    Ok(Figures {
        write_mbs,
        walk_fps,
        read_fps,
        read_mbs,
        save_mbs,
        load_mbs,
        create_ops,
        stat_ops,
        unlink_ops,
    })
}

/// Runs the benchmark.
pub fn main(mut a: Args) -> Result<(), String> {
    let dir: String = a.get("dir", String::new())?;
    let baseline: String = a.get("baseline", "/var/tmp".to_string())?;
    let plan = Plan {
        files: a.get("files", 100_000usize)?,
        dirs: a.get("dirs", 1_000usize)?.max(1),
        readers: a.get("readers", 8usize)?.max(1),
        ckpt_mib: a.get("ckpt-mib", 4096usize)?,
        meta_files: a.get("meta-files", 20_000usize)?,
    };
    let json = a.flag("json");
    let json_out: String = a.get("json-out", String::new())?;
    a.finish()?;
    if dir.is_empty() {
        return Err("give --dir (a Flint mount) and --baseline (a directory on ext4)".into());
    }
    let cold = drop_caches();
    if !cold {
        eprintln!("flint-bench posix: cannot drop caches (not root): cold passes are warm");
    }
    let flint = run(Path::new(&dir), &plan)?;
    let base = run(Path::new(&baseline), &plan)?;
    let rows: Vec<(&str, &str, f64, f64)> = vec![
        ("dataset write", "MB/s", flint.write_mbs, base.write_mbs),
        (
            "dataset walk (readdir+stat)",
            "files/s",
            flint.walk_fps,
            base.walk_fps,
        ),
        (
            "dataset epoch read",
            "files/s",
            flint.read_fps,
            base.read_fps,
        ),
        ("dataset epoch read", "MB/s", flint.read_mbs, base.read_mbs),
        (
            "checkpoint save (1 MiB + fsync)",
            "MB/s",
            flint.save_mbs,
            base.save_mbs,
        ),
        ("checkpoint load", "MB/s", flint.load_mbs, base.load_mbs),
        ("create", "ops/s", flint.create_ops, base.create_ops),
        ("stat (cold)", "ops/s", flint.stat_ops, base.stat_ops),
        ("unlink", "ops/s", flint.unlink_ops, base.unlink_ops),
    ];
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(w, u, f, b)| {
            serde_json::json!({"workload": w, "unit": u, "flint": f, "baseline": b,
                "ratio": if *b > 0.0 { f / b } else { 0.0 }})
        })
        .collect();
    let doc = serde_json::json!({"benchmark": "posix", "files": plan.files, "dirs": plan.dirs,
        "readers": plan.readers, "ckpt_mib": plan.ckpt_mib, "cold": cold,
        "dir": dir, "baseline_dir": baseline, "results": items});
    if !json_out.is_empty() {
        std::fs::write(&json_out, format!("{doc}\n"))
            .map_err(|e| format!("writing {json_out}: {e}"))?;
    }
    if json {
        println!("{doc}");
        return Ok(());
    }
    println!(
        "posix workloads: {} files in {} dirs, {} readers, {} MiB checkpoint, {} metadata files ({})",
        plan.files,
        plan.dirs,
        plan.readers,
        plan.ckpt_mib,
        plan.meta_files,
        if cold { "caches dropped before cold passes" } else { "caches NOT dropped" }
    );
    let mut t = Table::new(&["workload", "unit", "flint mount", "baseline", "ratio"]);
    for (w, u, f, b) in rows {
        t.row(vec![
            w.into(),
            u.into(),
            format!("{f:.0}"),
            format!("{b:.0}"),
            ratio(f, b),
        ]);
    }
    print!("{t}");
    Ok(())
}
