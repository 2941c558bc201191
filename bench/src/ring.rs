//! `flint-bench ring`: cross-core message rate over the reactor mesh, beside
//! Rust's `std::sync::mpsc::sync_channel` between two pinned threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flint_dataplane::mesh;
use flint_dataplane::placement;
use flint_dataplane::poller::{poller_fn, PollStatus};
use flint_dataplane::reactor::{PollMode, ReactorConfig, ReactorSet};

use crate::args::Args;
use crate::report::{ratio, Table};

struct Rate {
    name: String,
    msgs_per_sec: f64,
}

fn run_mesh(cpus: &[usize], secs: u64, batch: usize, cap: usize) -> Result<Rate, String> {
    let cfg = ReactorConfig {
        cores: cpus.to_vec(),
        poll_mode: PollMode::Busy,
        ..ReactorConfig::default()
    };
    let set = ReactorSet::start(&cfg).map_err(|e| e.to_string())?;
    let mut eps = mesh::mesh::<u64>(set.wakers(), cap);
    let rx_ep = eps.pop().ok_or("mesh has no endpoints")?;
    let mut tx_ep = eps.remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    {
        let stop = stop.clone();
        set.call(0, move |core| {
            let mut next = 0u64;
            let mut pending: Vec<u64> = Vec::with_capacity(batch);
            core.add_poller(poller_fn("ring-tx", move |_core| {
                if stop.load(Ordering::Relaxed) {
                    return PollStatus::Done;
                }
                while pending.len() < batch {
                    pending.push(next);
                    next += 1;
                }
                let n = tx_ep.send_batch(1, &mut pending);
                tx_ep.flush();
                PollStatus::from_work(n > 0)
            }));
        })
        .map_err(|e| e.to_string())?;
    }
    {
        let stop = stop.clone();
        let received = received.clone();
        let bad = bad.clone();
        let mut rx_ep = rx_ep;
        set.call(1, move |core| {
            let mut expect = 0u64;
            core.add_poller(poller_fn("ring-rx", move |core| {
                let mut wrong = 0;
                let n = rx_ep.recv(1024, |_, m| {
                    wrong += u64::from(m != expect);
                    expect = m + 1;
                });
                core.stats().add_messages(n as u64);
                received.store(expect, Ordering::Relaxed);
                if wrong > 0 {
                    bad.fetch_add(wrong, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    return PollStatus::Done;
                }
                PollStatus::from_work(n > 0)
            }));
        })
        .map_err(|e| e.to_string())?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let r0 = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let r1 = received.load(Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    set.shutdown();
    if bad.load(Ordering::Relaxed) > 0 {
        return Err("messages arrived out of order".into());
    }
    Ok(Rate {
        name: format!("flint mesh ring (batch {batch})"),
        msgs_per_sec: (r1 - r0) as f64 / dt,
    })
}

fn run_std(cpus: &[usize], secs: u64, cap: usize) -> Rate {
    let (tx, rx) = mpsc::sync_channel::<u64>(cap);
    let stop = Arc::new(AtomicBool::new(false));
    let (c0, c1) = (cpus[0], cpus[1]);
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let _ = placement::pin_current_thread(c0);
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            if tx.send(i).is_err() {
                break;
            }
            i += 1;
        }
    });
    let consumer = std::thread::spawn(move || {
        let _ = placement::pin_current_thread(c1);
        let mut n = 0u64;
        let mut t0 = None;
        let mut n0 = 0;
        let start = Instant::now();
        while let Ok(_m) = rx.recv() {
            n += 1;
            if t0.is_none() && start.elapsed() > Duration::from_millis(200) {
                t0 = Some(Instant::now());
                n0 = n;
            }
            if let Some(t) = t0 {
                if t.elapsed() >= Duration::from_secs(secs) {
                    return (n - n0) as f64 / t.elapsed().as_secs_f64();
                }
            }
        }
        0.0
    });
    let rate = consumer.join().unwrap_or(0.0);
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    Rate {
        name: "std mpsc sync_channel".into(),
        msgs_per_sec: rate,
    }
}

/// `flint-bench ring`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 3u64)?;
    let batch = a.get("batch", 32usize)?;
    let cap = a.get("capacity", 4096usize)?;
    let json = a.flag("json");
    a.finish()?;
    let cpus = placement::allowed_cores().map_err(|e| e.to_string())?;
    if cpus.len() < 2 {
        return Err("the ring benchmark needs two CPUs".into());
    }
    let cpus = &cpus[cpus.len() - 2..];
    let flint = run_mesh(cpus, secs, batch.max(1), cap)?;
    let base = run_std(cpus, secs, cap);
    if json {
        let v = serde_json::json!({
            "bench": "ring",
            "cpus": cpus,
            "flint_msgs_per_sec": flint.msgs_per_sec,
            "baseline": base.name,
            "baseline_msgs_per_sec": base.msgs_per_sec,
            "ratio": flint.msgs_per_sec / base.msgs_per_sec.max(1.0),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "ring: CPU {} -> CPU {}, {secs}s, capacity {cap}",
        cpus[0], cpus[1]
    );
    let mut t = Table::new(&["channel", "Mmsg/s"]);
    for r in [&flint, &base] {
        t.row(vec![r.name.clone(), format!("{:.1}", r.msgs_per_sec / 1e6)]);
    }
    t.row(vec![
        "ratio flint/std".into(),
        ratio(flint.msgs_per_sec, base.msgs_per_sec),
    ]);
    print!("{t}");
    Ok(())
}
