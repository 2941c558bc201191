//! `flint-bench engine`: 4 KiB random reads through the store (extent map ->
//! stripe -> chunk -> checksum verify), healthy and with a device gone,
//! beside raw 4 KiB reads from the same `memory` device through a queue pair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_dataplane::bdev::fault::FaultyDevice;
use flint_dataplane::bdev::{
    self, Backend, BlockDevice, Completion, DeviceSpec, IoCmd, QpairOptions,
};
use flint_dataplane::config::ByteSize;
use flint_dataplane::mempool::{BufPool, HugePages};
use flint_dataplane::reactor::{ReactorConfig, ReactorSet};
use flint_engine::engine::Engine;
use flint_engine::store::StoreConfig;

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

fn reactor() -> ReactorConfig {
    let cpus = flint_dataplane::placement::allowed_cores().unwrap_or_default();
    ReactorConfig {
        cores: cpus.last().map(|c| vec![*c]).unwrap_or_default(),
        ..ReactorConfig::default()
    }
}

/// Writes a `mib` MiB file of random data (four distinct 4 MiB pieces,
/// repeated) in 4 MiB calls through an engine with `shards` shards on as
/// many reactors (up to the CPUs), then syncs; returns GB/s and the dedup
/// ratio the engine reports.
fn sharded_write(
    k: u8,
    m: u8,
    mib: u64,
    shards: u32,
    reduction: bool,
) -> Result<(f64, f64), String> {
    let n = usize::from(k + m);
    let dev_mib = (mib * u64::from(k + m) / u64::from(k) / n as u64 * 2 + 64).max(128);
    let devs: Vec<Arc<dyn BlockDevice>> = (0..n)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("ram{i}"), Backend::Memory);
            s.size = Some(ByteSize(dev_mib << 20));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let take = (shards as usize).min(cpus.len());
    let cfg = ReactorConfig {
        cores: cpus[cpus.len() - take..].to_vec(),
        ..ReactorConfig::default()
    };
    let mut e = Engine::start(&cfg).map_err(|e| e.to_string())?;
    let store = StoreConfig {
        shards,
        ..StoreConfig::default()
    };
    e.format(devs.clone(), store, true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let fs = e
        .fs_create("w", k, m, reduction, u64::MAX)
        .map_err(|e| e.to_string())?;
    let ino = e.create(fs, "big").map_err(|e| e.to_string())?;
    let mut rng = Rng::new(9);
    let chunks: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let mut c = vec![0u8; 4 << 20];
            for w in c.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
            c
        })
        .collect();
    let t0 = Instant::now();
    for i in 0..mib / 4 {
        e.write(ino, i * (4 << 20), chunks[(i % 4) as usize].clone())
            .map_err(|e| e.to_string())?;
    }
    e.sync().map_err(|e| e.to_string())?;
    let gbps = (mib << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let dedup = e.space().map_err(|e| e.to_string())?.dedup_ratio;
    let _ = e.close();
    Ok((gbps, dedup))
}

/// Raw QD1 4 KiB random reads on one device: the ceiling for the store.
fn raw_reads(dev: Arc<dyn BlockDevice>, span_blocks: u64, secs: f64) -> Result<f64, String> {
    let set = ReactorSet::start(&reactor()).map_err(|e| e.to_string())?;
    set.call(0, move |core| -> Result<f64, String> {
        let mut qp = dev
            .queue_pair(core, &QpairOptions { depth: 4 })
            .map_err(|e| e.to_string())?;
        let mut pool = BufPool::new(1, 4096, HugePages::Auto).map_err(|e| e.to_string())?;
        let mut buf = pool.get().ok_or("empty pool")?;
        let mut rng = Rng::new(7);
        let mut out = [Completion::EMPTY; 4];
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs_f64(secs) {
            for _ in 0..256 {
                let lba = rng.next() % span_blocks;
                // SAFETY: the buffer outlives the command, reaped just below.
                unsafe { qp.submit(&IoCmd::read(lba, 1, buf.as_mut_ptr(), 0)) }
                    .map_err(|e| e.to_string())?;
                while qp.poll(&mut out) == 0 {}
            }
            n += 256;
        }
        drop(qp);
        let _ = pool.put(buf);
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    })
    .map_err(|e| e.to_string())?
}

fn store_reads(e: &Engine, ino: u64, blocks: u64, secs: f64) -> Result<f64, String> {
    e.call(move |s| {
        let mut rng = Rng::new(11);
        let mut pool = BufPool::new(1, 4096, HugePages::Auto)?;
        let mut buf = pool.get().ok_or(flint_engine::store::StoreError::NoSpace {
            what: "buffer pool".into(),
        })?;
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs_f64(secs) {
            for _ in 0..256 {
                let b = rng.next() % blocks;
                s.read_into(ino, b * 4096, buf.as_mut_slice())?;
            }
            n += 256;
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        let _ = pool.put(buf);
        Ok(rate)
    })
    .map_err(|e| e.to_string())
}

/// Reopens the engine on `devs` with device `gone` replaced by a blank one;
/// returns the GB/s of reading the whole `mib` MiB file degraded, of
/// rebuilding the blank device (file bytes covered per second), and the
/// chunks rebuilt.
fn replacement(
    devs: &[Arc<dyn BlockDevice>],
    gone: usize,
    dev_mib: u64,
    ino: u64,
    mib: u64,
) -> Result<(f64, f64, u64), String> {
    let mut spec = DeviceSpec::new("spare", Backend::Memory);
    spec.size = Some(ByteSize(dev_mib << 20));
    let mut some: Vec<Option<Arc<dyn BlockDevice>>> = devs.iter().cloned().map(Some).collect();
    some[gone] = Some(bdev::open(&spec).map_err(|e| e.to_string())?);
    let mut e = Engine::start(&reactor()).map_err(|e| e.to_string())?;
    e.open(some).map_err(|e| e.to_string())?;
    let bytes = (mib << 20) as f64;
    let t = Instant::now();
    e.call(move |s| {
        for mb in 0..mib {
            s.read(ino, mb << 20, 1 << 20)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let read = bytes / t.elapsed().as_secs_f64() / 1e9;
    let t = Instant::now();
    let r = e
        .replace_device("spare", false)
        .map_err(|e| e.to_string())?;
    let rebuild = bytes / t.elapsed().as_secs_f64() / 1e9;
    let _ = e.close();
    Ok((read, rebuild, r.chunks))
}

/// `flint-bench engine`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 2.0f64)?;
    let k = a.get("k", 4u8)?;
    let m = a.get("m", 2u8)?;
    let mib = a.get("size-mib", 64u64)?;
    let json = a.flag("json");
    a.finish()?;
    let n = usize::from(k + m);
    let dev_mib = (mib * u64::from(k + m) / u64::from(k) / n as u64 + 64).max(128);
    let mut devs: Vec<Arc<dyn BlockDevice>> = Vec::new();
    let mut plans = Vec::new();
    for i in 0..n {
        let mut s = DeviceSpec::new(&format!("ram{i}"), Backend::Memory);
        s.size = Some(ByteSize(dev_mib << 20));
        let (d, p) = FaultyDevice::wrap(bdev::open(&s).map_err(|e| e.to_string())?);
        devs.push(d);
        plans.push(p);
    }
    let raw = raw_reads(devs[0].clone(), (dev_mib << 20) / 4096, secs)?;

    let mut e = Engine::start(&reactor()).map_err(|e| e.to_string())?;
    e.format(devs.clone(), StoreConfig::default(), true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let blocks = mib * 256;
    let ino = e
        .call(move |s| {
            let fs = s.fs_create("bench", k, m, true, u64::MAX)?;
            let ino = s.create(fs, "data")?;
            let mut rng = Rng::new(3);
            let mut chunk = vec![0u8; 1 << 20];
            for mb in 0..mib {
                for c in chunk.chunks_mut(8) {
                    c.copy_from_slice(&rng.next().to_le_bytes());
                }
                s.write(ino, mb << 20, &chunk)?;
            }
            s.sync()?;
            Ok(ino)
        })
        .map_err(|e| e.to_string())?;
    let healthy = store_reads(&e, ino, blocks, secs)?;
    plans[1].fail_all();
    let degraded = store_reads(&e, ino, blocks, secs)?;
    let _ = e.close();
    let (whole_degraded, rebuild, chunks) = replacement(&devs, 1, dev_mib, ino, mib)?;
    let shards = flint_dataplane::placement::allowed_cores()
        .map(|c| c.len())
        .unwrap_or(1)
        .max(2) as u32;
    let (write_one, _) = sharded_write(k, m, mib * 2, 1, false)?;
    let (write_many, _) = sharded_write(k, m, mib * 2, shards, false)?;
    let (reduce_one, dedup_one) = sharded_write(k, m, mib * 2, 1, true)?;
    let (reduce_many, dedup_many) = sharded_write(k, m, mib * 2, shards, true)?;
    let ideal = (mib * 2) as f64 / 16.0;

    if json {
        let v = serde_json::json!({"bench": "engine", "k": k, "m": m, "mib": mib,
            "raw_device_iops": raw, "healthy_iops": healthy, "degraded_iops": degraded,
            "healthy_vs_raw": healthy / raw, "degraded_vs_healthy": degraded / healthy,
            "write_gbps_1_shard": write_one, "shards": shards,
            "write_gbps_sharded": write_many,
            "reduced_write_gbps_1_shard": reduce_one, "reduced_write_gbps_sharded": reduce_many,
            "dedup_1_shard": dedup_one, "dedup_sharded": dedup_many, "dedup_ideal": ideal,
            "degraded_whole_read_gbps": whole_degraded, "rebuild_gbps": rebuild,
            "rebuilt_chunks": chunks});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "engine: 4 KiB random reads, QD1, one core, {k}+{m} on {n} memory devices, {mib} MiB file"
    );
    let mut t = Table::new(&["path", "IOPS", "ratio"]);
    t.row(vec![
        "raw memory device (queue pair)".into(),
        format!("{raw:.0}"),
        "1.00x".into(),
    ]);
    t.row(vec![
        "store, checksums verified".into(),
        format!("{healthy:.0}"),
        ratio(healthy, raw),
    ]);
    t.row(vec![
        "store, one device gone (vs healthy)".into(),
        format!("{degraded:.0}"),
        ratio(degraded, healthy),
    ]);
    print!("{t}");
    println!(
        "engine: device {n1} replaced by a blank one ({chunks} chunks rebuilt), rate in file bytes covered",
        n1 = 1
    );
    let mut t = Table::new(&["path", "GB/s", "ratio"]);
    t.row(vec![
        "whole file read with the device missing (decodes its chunks)".into(),
        format!("{whole_degraded:.2}"),
        "1.00x".into(),
    ]);
    t.row(vec![
        "rebuild onto the replacement (flint device replace)".into(),
        format!("{rebuild:.2}"),
        ratio(rebuild, whole_degraded),
    ]);
    print!("{t}");
    println!(
        "engine: {} MiB file written in 4 MiB calls, {k}+{m}, no reduction, then synced",
        mib * 2
    );
    let mut t = Table::new(&["engine", "GB/s", "ratio"]);
    t.row(vec![
        "1 shard on 1 reactor".into(),
        format!("{write_one:.2}"),
        "1.00x".into(),
    ]);
    t.row(vec![
        format!("{shards} shards on {shards} reactors"),
        format!("{write_many:.2}"),
        ratio(write_many, write_one),
    ]);
    print!("{t}");
    println!(
        "engine: the same with reduction on (4 distinct 4 MiB pieces repeated: ideal dedup {ideal:.1}x)"
    );
    let mut t = Table::new(&["engine", "GB/s", "ratio", "dedup"]);
    t.row(vec![
        "1 shard on 1 reactor".into(),
        format!("{reduce_one:.2}"),
        "1.00x".into(),
        format!("{dedup_one:.2}x"),
    ]);
    t.row(vec![
        format!("{shards} shards, engine-wide dedup"),
        format!("{reduce_many:.2}"),
        ratio(reduce_many, reduce_one),
        format!("{dedup_many:.2}x"),
    ]);
    print!("{t}");
    Ok(())
}
