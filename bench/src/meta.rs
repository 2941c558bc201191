//! `flint-bench meta`: mdtest-like metadata rates — create, stat, readdir,
//! rename and unlink over N files in D directories — for Flint's namespace
//! in-process, beside the same operations through the kernel on tmpfs and
//! on the disk's file system, in the same run.
//!
//! Flint's column is the namespace layer on its copy-on-write B+tree with
//! the pages in memory (`MemPages`), one core, including the commits that
//! write the changed pages; it is not yet the engine's on-device metadata,
//! nor over the protocol.

use std::time::Instant;

use flint_engine::meta::btree::{MemPages, Pager, PAGE};
use flint_engine::meta::namespace::{Ctx, RenameFlags, Standalone, ROOT};

use crate::args::Args;
use crate::report::{ratio, Table};

/// Operations per second of each phase.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    create: f64,
    stat: f64,
    readdir: f64,
    rename: f64,
    unlink: f64,
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn run_flint(files: usize, dirs: usize, cache_mib: usize) -> Result<Rates, String> {
    let e = |x: flint_engine::meta::namespace::NsError| x.to_string();
    let ctx = Ctx {
        uid: 0,
        gid: 0,
        now: now(),
    };
    let pager = Pager::new(1, cache_mib << 20);
    let mut ns = Standalone::new(MemPages::new(), pager, ctx, 0o755).map_err(e)?;
    let commit = |ns: &mut Standalone<MemPages>| -> Result<(), String> {
        for p in ns.commit().map_err(e)? {
            ns.io.free(p.addr);
        }
        Ok(())
    };
    let mut d = Vec::with_capacity(dirs);
    for i in 0..dirs {
        d.push(
            ns.ns()
                .mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, ctx)
                .map_err(e)?
                .ino,
        );
    }
    commit(&mut ns)?;
    let name = |i: usize| format!("file-{i:08}");
    let mut r = Rates::default();
    let t = Instant::now();
    for i in 0..files {
        ns.ns()
            .create(d[i % dirs], name(i).as_bytes(), 0o644, ctx)
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.create = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        let a = ns.ns().lookup(d[i % dirs], name(i).as_bytes()).map_err(e)?;
        std::hint::black_box(a);
    }
    r.stat = rate(files, t);
    let t = Instant::now();
    let mut listed = 0;
    for &dir in &d {
        let mut cookie = 0;
        loop {
            let page = ns.ns().readdir(dir, cookie, 1024).map_err(e)?;
            let Some(last) = page.last() else { break };
            cookie = last.cookie;
            listed += page.len();
        }
    }
    if listed != files {
        return Err(format!("readdir listed {listed} of {files} entries"));
    }
    r.readdir = rate(listed, t);
    let t = Instant::now();
    for i in 0..files {
        let dir = d[i % dirs];
        let to = format!("moved-{i:08}");
        ns.ns()
            .rename(
                dir,
                name(i).as_bytes(),
                dir,
                to.as_bytes(),
                RenameFlags::default(),
                ctx,
            )
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.rename = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        ns.ns()
            .unlink(d[i % dirs], format!("moved-{i:08}").as_bytes(), ctx)
            .map_err(e)?;
        if i % 10_000 == 9_999 {
            commit(&mut ns)?;
        }
    }
    commit(&mut ns)?;
    r.unlink = rate(files, t);
    Ok(r)
}

fn run_kernel(root: &std::path::Path, files: usize, dirs: usize) -> Result<Rates, String> {
    let e = |x: std::io::Error| format!("{}: {x}", root.display());
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).map_err(e)?;
    let d: Vec<std::path::PathBuf> = (0..dirs).map(|i| root.join(format!("d{i}"))).collect();
    for p in &d {
        std::fs::create_dir(p).map_err(e)?;
    }
    let name = |i: usize| d[i % dirs].join(format!("file-{i:08}"));
    let moved = |i: usize| d[i % dirs].join(format!("moved-{i:08}"));
    let mut r = Rates::default();
    let t = Instant::now();
    for i in 0..files {
        std::fs::File::create(name(i)).map_err(e)?;
    }
    r.create = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        std::hint::black_box(std::fs::metadata(name(i)).map_err(e)?);
    }
    r.stat = rate(files, t);
    let t = Instant::now();
    let mut listed = 0;
    for p in &d {
        listed += std::fs::read_dir(p).map_err(e)?.count();
    }
    r.readdir = rate(listed, t);
    let t = Instant::now();
    for i in 0..files {
        std::fs::rename(name(i), moved(i)).map_err(e)?;
    }
    r.rename = rate(files, t);
    let t = Instant::now();
    for i in 0..files {
        std::fs::remove_file(moved(i)).map_err(e)?;
    }
    r.unlink = rate(files, t);
    let _ = std::fs::remove_dir_all(root);
    Ok(r)
}

pub fn main(mut a: Args) -> Result<(), String> {
    let files = a.get("files", 200_000usize)?;
    let dirs = a.get("dirs", 100usize)?.max(1);
    let cache = a.get("cache-mib", 256usize)?;
    let disk: String = a.get("disk-dir", "/var/tmp/flint-bench-meta".to_string())?;
    let shm: String = a.get("tmpfs-dir", "/dev/shm/flint-bench-meta".to_string())?;
    let json = a.flag("json");
    a.finish()?;
    let flint = run_flint(files, dirs, cache)?;
    let tmpfs = run_kernel(std::path::Path::new(&shm), files, dirs)?;
    let ext = run_kernel(std::path::Path::new(&disk), files, dirs)?;
    let phases = |r: &Rates| {
        [
            ("create", r.create),
            ("stat", r.stat),
            ("readdir", r.readdir),
            ("rename", r.rename),
            ("unlink", r.unlink),
        ]
    };
    if json {
        let rows: Vec<serde_json::Value> = phases(&flint)
            .iter()
            .zip(phases(&tmpfs))
            .zip(phases(&ext))
            .map(|(((op, f), (_, t)), (_, x))| {
                serde_json::json!({
                    "op": op, "flint_per_sec": f, "tmpfs_per_sec": t, "disk_fs_per_sec": x,
                    "vs_tmpfs": f / t.max(1.0), "vs_disk_fs": f / x.max(1.0),
                })
            })
            .collect();
        let v = serde_json::json!({
            "bench": "meta", "files": files, "dirs": dirs, "cache_mib": cache,
            "page": PAGE, "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "meta: {files} files in {dirs} directories; Flint's namespace in-process \
         (pages in memory, {cache} MiB cache) vs the kernel on tmpfs ({shm}) and on {disk}"
    );
    let mut t = Table::new(&[
        "op",
        "flint/s",
        "tmpfs/s",
        "disk fs/s",
        "vs tmpfs",
        "vs disk fs",
    ]);
    for ((op, f), ((_, tm), (_, x))) in phases(&flint)
        .into_iter()
        .zip(phases(&tmpfs).into_iter().zip(phases(&ext)))
    {
        t.row(vec![
            op.to_string(),
            format!("{f:.0}"),
            format!("{tm:.0}"),
            format!("{x:.0}"),
            ratio(f, tm),
            ratio(f, x),
        ]);
    }
    print!("{t}");
    Ok(())
}
