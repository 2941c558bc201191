//! `flint-bench fill`: sequential 1 MiB writes through the engine on
//! file-backed devices until they are full (or `--gib` is written), synced
//! every 64 MiB, with the write rate of each window — beside the same writes
//! to one plain file on the same disk (fdatasync every 64 MiB), in the same
//! run. Shows whether the rate decays as stored data grows (metadata that
//! costs what exists would) and where "full" is against physical capacity.

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
use crate::rng::Rng;

const SYNC_EVERY: u64 = 64;

/// MiB/s of each window of `window` MiB, and where the run stopped.
struct Run {
    windows: Vec<f64>,
    first_100: f64,
    written_mib: u64,
    stop: String,
}

fn block(rng: &mut Rng) -> Vec<u8> {
    let mut c = vec![0u8; 1 << 20];
    for w in c.chunks_mut(8) {
        w.copy_from_slice(&rng.next().to_le_bytes());
    }
    c
}

/// Writes 1 MiB pieces with `write`, calling `sync` every 64 MiB, until
/// `limit_mib` or an error; rates per `window` MiB.
fn run(
    limit_mib: u64,
    window: u64,
    write: &mut dyn FnMut(u64, Vec<u8>) -> Result<(), String>,
    sync: &mut dyn FnMut() -> Result<(), String>,
) -> Run {
    let mut rng = Rng::new(5);
    let pieces: Vec<Vec<u8>> = (0..8).map(|_| block(&mut rng)).collect();
    let mut out = Run {
        windows: Vec::new(),
        first_100: 0.0,
        written_mib: 0,
        stop: "limit reached".into(),
    };
    let t0 = Instant::now();
    let mut tw = Instant::now();
    for i in 0..limit_mib {
        let r = write(i << 20, pieces[(i % 8) as usize].clone()).and_then(|()| {
            match (i + 1) % SYNC_EVERY {
                0 => sync(),
                _ => Ok(()),
            }
        });
        if let Err(e) = r {
            out.stop = e;
            break;
        }
        out.written_mib = i + 1;
        if i + 1 == 100 {
            out.first_100 = 100.0 / t0.elapsed().as_secs_f64();
        }
        if (i + 1) % window == 0 {
            out.windows.push(window as f64 / tw.elapsed().as_secs_f64());
            tw = Instant::now();
        }
    }
    let _ = sync();
    out
}

fn run_flint(
    dir: &std::path::Path,
    devices: usize,
    dev_mib: u64,
    limit: u64,
    window: u64,
) -> Result<(Run, u64), String> {
    let devs: Vec<Arc<dyn BlockDevice>> = (0..devices)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("fill{i}"), Backend::Uring);
            s.path = Some(dir.join(format!("dev{i}.img")));
            s.size = Some(ByteSize(dev_mib << 20));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let cfg = ReactorConfig {
        cores: cpus.last().map(|c| vec![*c]).unwrap_or_default(),
        ..ReactorConfig::default()
    };
    let mut e = Engine::start(&cfg).map_err(|e| e.to_string())?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let k = (devices as u8).saturating_sub(2).clamp(1, 4);
    let m = (devices as u8 - k).min(2);
    let fs = e
        .fs_create("fill", k, m, false, u64::MAX)
        .map_err(|e| e.to_string())?;
    let ino = e.create(fs, "big").map_err(|e| e.to_string())?;
    let data_room =
        e.space().map_err(|e| e.to_string())?.capacity / u64::from(k + m) * u64::from(k);
    let r = run(
        limit,
        window,
        &mut |off, data| e.write(ino, off, data).map_err(|e| e.to_string()),
        &mut || e.sync().map_err(|e| e.to_string()),
    );
    let _ = e.close();
    Ok((r, data_room))
}

fn run_file(path: &std::path::Path, limit: u64, window: u64) -> Result<Run, String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f = std::cell::RefCell::new(f);
    let r = run(
        limit,
        window,
        &mut |_, data| f.borrow_mut().write_all(&data).map_err(|e| e.to_string()),
        &mut || f.borrow().sync_data().map_err(|e| e.to_string()),
    );
    let _ = std::fs::remove_file(path);
    Ok(r)
}

/// Entry point.
pub fn main(mut a: Args) -> Result<(), String> {
    let dir: String = a.get("dir", "/var/tmp/flint-bench-fill".to_string())?;
    let devices = a.get("devices", 6usize)?.max(1);
    let dev_mib = a.get("dev-mib", 1024u64)?;
    let gib = a.get("gib", 0u64)?;
    let window = a.get("window", 256u64)?.max(1);
    let json = a.flag("json");
    a.finish()?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Until full unless asked for less.
    let limit = if gib > 0 { gib << 10 } else { u64::MAX >> 20 };
    let (flint, room) = run_flint(&dir, devices, dev_mib, limit, window)?;
    for i in 0..devices {
        let _ = std::fs::remove_file(dir.join(format!("dev{i}.img")));
    }
    let file = run_file(
        &dir.join("baseline.bin"),
        flint.written_mib.max(window),
        window,
    )?;
    let last = |r: &Run| r.windows.last().copied().unwrap_or(0.0);
    if json {
        let v = serde_json::json!({
            "devices": devices, "device_mib": dev_mib,
            "flint_written_mib": flint.written_mib, "flint_stop": flint.stop,
            "data_capacity_mib": room >> 20,
            "filled_share": (flint.written_mib << 20) as f64 / room.max(1) as f64,
            "flint_windows_mib_s": flint.windows, "file_windows_mib_s": file.windows,
            "flint_first_100_mib_s": flint.first_100, "flint_last_window_mib_s": last(&flint),
            "decay": last(&flint) / flint.first_100.max(1e-9),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "sequential 1 MiB writes, sync every {SYNC_EVERY} MiB: Flint ({devices} file-backed \
         devices of {dev_mib} MiB) beside one plain file on the same disk"
    );
    let mut t = Table::new(&["window (MiB)", "flint MiB/s", "file MiB/s", "flint/file"]);
    for (i, f) in flint.windows.iter().enumerate() {
        let b = file.windows.get(i).copied().unwrap_or(0.0);
        t.row(vec![
            format!("{}..{}", i as u64 * window, (i as u64 + 1) * window),
            format!("{f:.0}"),
            format!("{b:.0}"),
            ratio(*f, b),
        ]);
    }
    print!("{t}");
    println!(
        "first 100 MiB: {:.0} MiB/s; last window: {:.0} MiB/s ({} of the first)",
        flint.first_100,
        last(&flint),
        ratio(last(&flint), flint.first_100)
    );
    println!(
        "stopped after {} MiB ({:.1}% of the {} MiB data capacity): {}",
        flint.written_mib,
        100.0 * (flint.written_mib << 20) as f64 / room.max(1) as f64,
        room >> 20,
        flint.stop
    );
    Ok(())
}
