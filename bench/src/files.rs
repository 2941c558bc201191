//! `flint-bench files`: many small files through the engine in-process —
//! create, write 4 KiB, sync every 1,000 files — window by window, so a
//! rate that falls as files accumulate shows; beside the same files created,
//! written and fdatasync'd (every 1,000th) on the disk's file system, in
//! the same run; then the engine's reopen time with all of them.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;

use crate::args::Args;
use crate::report::{ratio, Table};

const SYNC_EVERY: usize = 1000;

/// Files per second of each window, and the reopen time (engine only).
fn windows(
    n: usize,
    window: usize,
    step: &mut dyn FnMut(usize) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    let mut t = Instant::now();
    for i in 0..n {
        step(i)?;
        if (i + 1) % window == 0 {
            out.push(window as f64 / t.elapsed().as_secs_f64());
            t = Instant::now();
        }
    }
    Ok(out)
}

fn engine() -> Result<Engine, String> {
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let cfg = ReactorConfig {
        cores: cpus.last().map(|c| vec![*c]).unwrap_or_default(),
        ..ReactorConfig::default()
    };
    Engine::start(&cfg).map_err(|e| e.to_string())
}

/// The resident set of this process, in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Flint's run: files per second per window, the reopen time and the
/// resident set after the writes and after the reopen (MiB).
struct FlintRun {
    rates: Vec<f64>,
    reopen: f64,
    rss_written: f64,
    rss_reopened: f64,
    /// Entries per second of a full listing with attributes after the
    /// reopen (pages of 1,024).
    walk: f64,
}

fn run_flint(
    dir: &std::path::Path,
    n: usize,
    window: usize,
    device_mib: u64,
    bytes: usize,
) -> Result<FlintRun, String> {
    let devs: Vec<Arc<dyn BlockDevice>> = (0..6)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("files{i}"), Backend::Uring);
            s.path = Some(dir.join(format!("dev{i}.img")));
            s.size = Some(ByteSize(device_mib << 20));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut e = engine()?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let fs = e
        .fs_create("small", 4, 2, false, u64::MAX)
        .map_err(|e| e.to_string())?;
    let data = vec![0x5a; bytes];
    let rates = windows(n, window, &mut |i| {
        let ino = e
            .create(fs, &format!("f{i:08}"))
            .map_err(|e| e.to_string())?;
        if bytes > 0 {
            e.write(ino, 0, data.clone()).map_err(|e| e.to_string())?;
        }
        if (i + 1) % SYNC_EVERY == 0 {
            e.sync().map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    let rss_written = rss_mib();
    e.close().map_err(|e| e.to_string())?;
    let mut e = engine()?;
    let t = Instant::now();
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let reopen = t.elapsed().as_secs_f64();
    // Every file still there, by name, after the reopen.
    for i in (0..n).step_by((n / 1000).max(1)) {
        if e.lookup(fs, &format!("f{i:08}"))
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!("file f{i:08} missing after the reopen"));
        }
    }
    let rss_reopened = rss_mib();
    // A full walk with attributes, page by page.
    let t = Instant::now();
    let (mut cookie, mut listed) = (0, 0usize);
    loop {
        let page = e
            .list_page(fs, "", cookie, 1024)
            .map_err(|e| e.to_string())?;
        let Some(&(_, last)) = page.last() else {
            break;
        };
        if page.iter().any(|(st, _)| st.size != bytes as u64) {
            return Err("a listed file has the wrong size".into());
        }
        cookie = last;
        listed += page.len();
    }
    if listed != n {
        return Err(format!("the walk listed {listed} of {n} files"));
    }
    let walk = listed as f64 / t.elapsed().as_secs_f64();
    let _ = e.close();
    Ok(FlintRun {
        rates,
        reopen,
        rss_written,
        rss_reopened,
        walk,
    })
}

fn run_kernel(
    dir: &std::path::Path,
    n: usize,
    window: usize,
    bytes: usize,
) -> Result<Vec<f64>, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data = vec![0x5a; bytes];
    let r = windows(n, window, &mut |i| {
        let mut f =
            std::fs::File::create(dir.join(format!("f{i:08}"))).map_err(|e| e.to_string())?;
        f.write_all(&data).map_err(|e| e.to_string())?;
        if (i + 1) % SYNC_EVERY == 0 {
            // Empty files: their creates are the directory's to make durable.
            match bytes {
                0 => std::fs::File::open(dir).and_then(|d| d.sync_all()),
                _ => f.sync_data(),
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(dir);
    r
}

/// Entry point.
pub fn main(mut a: Args) -> Result<(), String> {
    let n = a.get("files", 20_000usize)?.max(1);
    let window = a.get("window", 5_000usize)?.clamp(1, n);
    let dir: String = a.get("dir", "/var/tmp/flint-bench-files".to_string())?;
    let device_mib = a.get("device-mib", 1024u64)?;
    let bytes = a.get("bytes", 4096usize)?;
    let json = a.flag("json");
    a.finish()?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let run = run_flint(&dir, n, window, device_mib, bytes)?;
    let (flint, reopen) = (&run.rates, run.reopen);
    for i in 0..6 {
        let _ = std::fs::remove_file(dir.join(format!("dev{i}.img")));
    }
    let kernel = run_kernel(&dir.join("kernel"), n, window, bytes)?;
    if json {
        let v = serde_json::json!({
            "files": n, "window": window, "flint_per_sec": flint,
            "disk_fs_per_sec": kernel, "flint_reopen_s": reopen,
            "flint_rss_mib_written": run.rss_written, "flint_rss_mib_reopened": run.rss_reopened,
            "flint_walk_per_sec": run.walk, "bytes": bytes,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "create + {bytes}-byte write per file, sync every {SYNC_EVERY}: Flint in-process (6 \
         file-backed devices of {device_mib} MiB, 4+2) beside the disk's file system"
    );
    let mut t = Table::new(&["files", "flint /s", "disk fs /s", "flint/disk fs"]);
    for (i, f) in flint.iter().enumerate() {
        let k = kernel.get(i).copied().unwrap_or(0.0);
        t.row(vec![
            format!("{}..{}", i * window, (i + 1) * window),
            format!("{f:.0}"),
            format!("{k:.0}"),
            ratio(*f, k),
        ]);
    }
    print!("{t}");
    println!(
        "reopen with {n} files: {reopen:.2} s; resident set {:.0} MiB after the writes, \
         {:.0} MiB after the reopen (metadata cache {} MiB per shard); a walk of every \
         entry with its attributes: {:.0} entries/s",
        run.rss_written,
        run.rss_reopened,
        flint_engine::store::META_CACHE_MIB,
        run.walk,
    );
    Ok(())
}
