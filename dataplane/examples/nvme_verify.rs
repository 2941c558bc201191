//! Flint's NVMe driver on a real controller over VFIO (QEMU's emulated
//! NVMe in the guest rig): bring-up, a random write/read/verify workload
//! over many queue wraps, a status the device injects surfacing as an
//! error, a reset in the middle of a workload with every command
//! completing, and 4 KiB random-read IOPS at QD1 and QD32. Prints
//! PASS/FAIL and BENCH lines for `scripts/nvme-guest.sh`.
//!
//! usage: nvme_verify BDF [--ops N] [--eio-lba LBA] [--bench SECS]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_dataplane::bdev::nvme::cmd::{nvm, Sqe};
use flint_dataplane::bdev::nvme::ctrl::Controller;
use flint_dataplane::bdev::nvme::dma::{DmaBuf, DmaMap};
use flint_dataplane::bdev::nvme::qpair::Done;
use flint_dataplane::bdev::nvme::vfio::Vfio;

type Ctrl = Controller<Arc<Vfio>>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check(ok: bool, name: &str) -> bool {
    println!("{} {name}", if ok { "PASS" } else { "FAIL" });
    ok
}

fn reap(c: &mut Ctrl, want: usize, deadline: Duration) -> Result<Vec<Done>, String> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < want {
        if c.check().map_err(|e| e.to_string())? {
            while !c.poll_start().map_err(|e| e.to_string())? {}
        }
        if c.reap_all(&mut out) == 0 {
            std::thread::sleep(Duration::from_micros(20));
        }
        if t0.elapsed() > deadline {
            return Err(format!(
                "{} of {want} commands did not complete",
                want - out.len()
            ));
        }
    }
    Ok(out)
}

/// Random writes then reads of them, verified, `ops` commands in all;
/// `reset_at`: reset the controller once after that many submissions.
fn workload(
    c: &mut Ctrl,
    map: &Arc<dyn DmaMap>,
    ops: usize,
    seed: u64,
    reset_at: Option<usize>,
) -> Result<usize, String> {
    let bs = c.info().block_size as u64;
    let blocks = c.info().blocks.min(1 << 20);
    let max = (c.info().max_transfer as u64 / bs).clamp(1, 32);
    let nq = c.queues().len();
    let depth = c.queues()[0].depth();
    // Buffers for one batch, mapped once.
    let slots = (nq * depth).min(64);
    let bufs: Vec<DmaBuf> = (0..slots)
        .map(|_| DmaBuf::mapped((max * bs) as usize, map))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut rng = Rng(seed);
    let mut done = 0;
    let mut submitted = 0;
    let mut model: HashMap<u64, u8> = HashMap::new(); // lba -> byte pattern seed
    while done < ops {
        let mut batch: Vec<(u64, u64, u8)> = Vec::new();
        for (i, buf) in bufs.iter().enumerate() {
            let n = 1 + rng.next() % max;
            let lba = rng.next() % (blocks - n);
            if batch.iter().any(|&(l, m, _)| lba < l + m && l < lba + n) {
                continue;
            }
            let v = (rng.next() % 250) as u8 + 1;
            let data: Vec<u8> = (0..n * bs).map(|j| v ^ (j as u8)).collect();
            buf.write(0, &data);
            let q = &mut c.queues()[i % nq];
            let len = (n * bs) as usize;
            q.submit(
                Sqe::rw(nvm::WRITE, 1, lba, n as u32),
                buf.iova(),
                len,
                i as u64,
            )
            .ok_or("queue full")?;
            batch.push((lba, n, v));
            submitted += 1;
            if reset_at == Some(submitted) {
                c.ring_all();
                c.reset();
            }
        }
        c.ring_all();
        for d in reap(c, batch.len(), Duration::from_secs(60))? {
            d.result.map_err(|s| format!("write failed: {s:?}"))?;
        }
        for &(lba, n, v) in &batch {
            for b in 0..n {
                model.insert(lba + b, v);
            }
        }
        done += batch.len();
        for (i, &(lba, n, _)) in batch.iter().enumerate() {
            let q = &mut c.queues()[i % nq];
            q.submit(
                Sqe::rw(nvm::READ, 1, lba, n as u32),
                bufs[i].iova(),
                (n * bs) as usize,
                i as u64,
            )
            .ok_or("queue full")?;
        }
        c.ring_all();
        for d in reap(c, batch.len(), Duration::from_secs(60))? {
            d.result.map_err(|s| format!("read failed: {s:?}"))?;
            let (lba, n, _) = batch[d.tag as usize];
            let mut got = vec![0u8; (n * bs) as usize];
            bufs[d.tag as usize].read(0, &mut got);
            for b in 0..n {
                let v = model[&(lba + b)];
                let at = (b * bs) as usize;
                let want: Vec<u8> = (0..bs).map(|j| v ^ ((at as u64 + j) as u8)).collect();
                if got[at..at + bs as usize] != want[..] {
                    return Err(format!("block {} read back differs", lba + b));
                }
            }
        }
        done += batch.len();
    }
    Ok(done)
}

fn bench(c: &mut Ctrl, map: &Arc<dyn DmaMap>, qd: usize, secs: f64) -> Result<f64, String> {
    let bs = c.info().block_size as u64;
    // The first 512 MiB, as fio's baseline (the injected error lies past).
    let blocks = c.info().blocks.min((512 << 20) / bs);
    let bufs: Vec<DmaBuf> = (0..qd)
        .map(|_| DmaBuf::mapped(4096, map))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let nlb = (4096 / bs).max(1) as u32;
    let mut rng = Rng(7);
    let q = 0;
    for (i, b) in bufs.iter().enumerate() {
        let lba = (rng.next() % (blocks / u64::from(nlb))) * u64::from(nlb);
        c.queues()[q]
            .submit(Sqe::rw(nvm::READ, 1, lba, nlb), b.iova(), 4096, i as u64)
            .ok_or("full")?;
    }
    c.ring_all();
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut out = Vec::new();
    let mut idle = 0u32;
    while t0.elapsed().as_secs_f64() < secs {
        out.clear();
        c.reap_all(&mut out);
        // Adaptive polling: after a while without completions, sleep a
        // little (a spinning vCPU starves the emulated controller here).
        if out.is_empty() {
            idle += 1;
            if idle > 64 {
                std::thread::sleep(Duration::from_micros(20));
            }
        } else {
            idle = 0;
        }
        for d in &out {
            d.result.map_err(|s| format!("read failed: {s:?}"))?;
            n += 1;
            let lba = (rng.next() % (blocks / u64::from(nlb))) * u64::from(nlb);
            let b = &bufs[d.tag as usize];
            c.queues()[q]
                .submit(Sqe::rw(nvm::READ, 1, lba, nlb), b.iova(), 4096, d.tag)
                .ok_or("full")?;
        }
        c.ring_all();
    }
    let left = c.queues()[q].in_flight();
    let _ = reap(c, left, Duration::from_secs(30));
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bdf) = args.first().cloned() else {
        eprintln!("usage: nvme_verify BDF [--ops N] [--eio-lba LBA] [--bench SECS]");
        std::process::exit(2);
    };
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let ops = opt("--ops").unwrap_or(3000) as usize;
    let vfio = match Vfio::open(&bdf) {
        Ok(v) => Arc::new(v),
        Err(e) => {
            println!("FAIL vfio-open: {e}");
            std::process::exit(1);
        }
    };
    let map: Arc<dyn DmaMap> = vfio.clone();
    let t0 = Instant::now();
    let mut c = match Controller::new(vfio.clone(), map.clone(), 2, 32, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL controller: {e}");
            std::process::exit(1);
        }
    };
    loop {
        match c.poll_start() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                println!("FAIL bring-up: {e}");
                std::process::exit(1);
            }
        }
    }
    let i = c.info().clone();
    println!(
        "T: up in {:.0} ms: {} {} blocks {} x {} B, MDTS {} KiB, {} I/O queues of {} entries",
        t0.elapsed().as_secs_f64() * 1e3,
        i.model,
        i.serial,
        i.blocks,
        i.block_size,
        i.max_transfer >> 10,
        i.io_queues,
        c.queues()[0].entries()
    );
    let mut ok = check(i.blocks > 0 && i.io_queues >= 1, "driver-bring-up");
    let entries = c.queues()[0].entries() as usize;
    match workload(&mut c, &map, ops, 1, None) {
        Ok(n) => {
            println!(
                "T: {n} commands, {:.1} wraps of each queue",
                n as f64 / (entries * c.queues().len()) as f64
            );
            ok &= check(
                n / (entries * c.queues().len()) >= 3,
                "driver-verify-3-wraps",
            );
        }
        Err(e) => {
            println!("T: {e}");
            ok &= check(false, "driver-verify-3-wraps");
        }
    }
    if let Some(lba) = opt("--eio-lba") {
        let buf = DmaBuf::mapped(4096, &map).expect("map");
        let nlb = (4096 / u64::from(i.block_size)) as u32;
        c.queues()[0]
            .submit(Sqe::rw(nvm::READ, 1, lba, nlb), buf.iova(), 4096, 1)
            .expect("room");
        c.ring_all();
        let r = reap(&mut c, 1, Duration::from_secs(30));
        println!("T: read at injected-error LBA {lba}: {r:?}");
        ok &= check(
            matches!(r.as_deref(), Ok([d]) if d.result.is_err()),
            "driver-eio-surfaces",
        );
    }
    let resets = c.resets;
    match workload(&mut c, &map, 400, 2, Some(20)) {
        Ok(_) => {
            // The one asked for, and any the driver's own recovery adds
            // (a command past its deadline under a slow emulated
            // controller); every write was verified either way.
            println!("T: resets during the workload: {}", c.resets - resets);
            ok &= check(c.resets > resets, "driver-reset-mid-workload")
        }
        Err(e) => {
            println!("T: {e}");
            ok &= check(false, "driver-reset-mid-workload");
        }
    }
    if let Some(secs) = opt("--bench") {
        for qd in [1usize, 31] {
            match bench(&mut c, &map, qd, secs as f64) {
                Ok(iops) => println!("BENCH driver randread-4k-qd{qd} {iops:.0}"),
                Err(e) => println!("T: bench failed: {e}"),
            }
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}
