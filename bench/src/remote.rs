//! `flint-bench remote`: the data protocol over loopback UDP — 4 KiB random
//! reads at a queue depth from one client thread, beside a plain UDP echo of
//! the same sizes (the transport's ceiling here), and 1 MiB sequential
//! writes and reads beside the same engine called in-process.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_dataplane::bdev::{self, Backend, BlockDevice, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::reactor::ReactorConfig;
use flint_engine::engine::Engine;
use flint_engine::net::client::{Client, ClientConfig};
use flint_engine::net::server::{Server, ServerConfig};
use flint_engine::net::wire::{self, Request};
use flint_engine::store::StoreConfig;
use hdrhistogram::Histogram;

use crate::args::Args;
use crate::report::{ratio, Table};
use crate::rng::Rng;

/// What a random-I/O run measured.
pub(crate) struct Figures {
    /// Operations per second.
    pub iops: f64,
    /// Latency percentiles, µs.
    pub p50: u64,
    pub p99: u64,
}

/// A UDP echo: requests of `req` bytes answered with `resp` bytes, `qd` in
/// flight from one client thread.
fn udp_echo(qd: usize, req: usize, resp: usize, secs: f64) -> Result<Figures, String> {
    let srv = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = srv.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    srv.set_read_timeout(Some(Duration::from_millis(50))).ok();
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let out = vec![7u8; resp];
        let mut reply = out.clone();
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = srv.recv_from(&mut buf) {
                reply[..8].copy_from_slice(&buf[..8.min(n)]);
                let _ = srv.send_to(&reply, from);
            }
        }
    });
    let cli = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    cli.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut sent_at = vec![Instant::now(); qd];
    let mut msg = vec![1u8; req];
    let mut buf = vec![0u8; 65536];
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 2).map_err(|e| e.to_string())?;
    for (i, at) in sent_at.iter_mut().enumerate() {
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cli.send_to(&msg, addr).map_err(|e| e.to_string())?;
        *at = Instant::now();
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let Ok((len, _)) = cli.recv_from(&mut buf) else {
            // Lost: resend every slot.
            for (i, at) in sent_at.iter_mut().enumerate() {
                msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let _ = cli.send_to(&msg, addr);
                *at = Instant::now();
            }
            continue;
        };
        if len < 8 {
            continue;
        }
        let i = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize % qd;
        let _ = h.record(sent_at[i].elapsed().as_micros() as u64);
        n += 1;
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let _ = cli.send_to(&msg, addr);
        sent_at[i] = Instant::now();
    }
    let iops = n as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    Ok(Figures {
        iops,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    })
}

/// 4 KiB random reads over the protocol, `qd` in flight.
fn remote_reads(
    c: &mut Client,
    ino: u64,
    blocks: u64,
    qd: usize,
    secs: f64,
) -> Result<Figures, String> {
    random_io(c, ino, blocks, qd, secs, false)
}

/// 4 KiB random reads (or writes) over `blocks` blocks of file `ino`, `qd`
/// in flight, for `secs` seconds.
pub(crate) fn random_io(
    c: &mut Client,
    ino: u64,
    blocks: u64,
    qd: usize,
    secs: f64,
    write: bool,
) -> Result<Figures, String> {
    let mut rng = Rng::new(5 + u64::from(write));
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 2).map_err(|e| e.to_string())?;
    let mut sent = vec![Instant::now(); qd];
    let block = vec![0x3cu8; 4096];
    let req = |rng: &mut Rng| {
        let offset = (rng.next() % blocks) * 4096;
        if write {
            Request::Write {
                ino,
                offset,
                data: block.clone(),
            }
        } else {
            Request::Read {
                ino,
                offset,
                len: 4096,
            }
        }
    };
    for (i, at) in sent.iter_mut().enumerate() {
        c.submit(&req(&mut rng), i as u64)
            .map_err(|e| e.to_string())?;
        *at = Instant::now();
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    // Slots whose next request waits for the session's window to move.
    let mut idle: Vec<usize> = Vec::new();
    while t0.elapsed().as_secs_f64() < secs {
        for done in c
            .poll(Duration::from_millis(100))
            .map_err(|e| e.to_string())?
        {
            if done.status < 0 || (!write && done.body.len() != 4096) {
                return Err(format!(
                    "4 KiB {} failed: {}",
                    if write { "write" } else { "read" },
                    done.status
                ));
            }
            let i = done.tag as usize;
            let _ = h.record(sent[i].elapsed().as_micros() as u64);
            n += 1;
            idle.push(i);
        }
        while let Some(&i) = idle.last() {
            match c.submit(&req(&mut rng), i as u64) {
                Ok(()) => {
                    sent[i] = Instant::now();
                    idle.pop();
                }
                Err(flint_engine::net::client::ClientError::Busy) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    let iops = n as f64 / t0.elapsed().as_secs_f64();
    // Drain.
    while c.in_flight() > 0 {
        c.poll(Duration::from_millis(100))
            .map_err(|e| e.to_string())?;
    }
    Ok(Figures {
        iops,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    })
}

/// Sequential 1 MiB writes then reads of `mib` MiB, `qd` in flight: GB/s.
fn remote_seq(c: &mut Client, ino: u64, mib: u64, qd: usize) -> Result<(f64, f64), String> {
    let w = seq_pass(c, ino, mib, qd, true)?;
    let r = seq_pass(c, ino, mib, qd, false)?;
    Ok((w, r))
}

/// Sequential 1 MiB writes (made durable) or reads of `mib` MiB of file
/// `ino`, `qd` in flight: GB/s.
pub(crate) fn seq_pass(
    c: &mut Client,
    ino: u64,
    mib: u64,
    qd: usize,
    write: bool,
) -> Result<f64, String> {
    let data = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    let (mut next, mut done) = (0u64, 0u64);
    while done < mib {
        while next < mib && c.in_flight() < qd {
            let req = if write {
                Request::Write {
                    ino,
                    offset: next << 20,
                    data: data.clone(),
                }
            } else {
                Request::Read {
                    ino,
                    offset: next << 20,
                    len: 1 << 20,
                }
            };
            c.submit(&req, next).map_err(|e| e.to_string())?;
            next += 1;
        }
        for d in c
            .poll(Duration::from_millis(100))
            .map_err(|e| e.to_string())?
        {
            if d.status < 0 {
                return Err(format!("1 MiB op failed: {}", d.status));
            }
            done += 1;
        }
    }
    if write {
        c.sync().map_err(|e| e.to_string())?;
    }
    Ok((mib << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

/// A node for the protocol benchmarks: `devices` RAM devices of `bytes`,
/// `shards` shards on as many reactors (up to the CPUs, the last ones),
/// organization `bench` owning file system `bench` (2+1, no reduction).
pub fn bench_node(
    devices: usize,
    bytes: u64,
    shards: u32,
) -> Result<(Engine, flint_engine::meta::Org, u32), String> {
    let devs: Vec<Arc<dyn BlockDevice>> = (0..devices)
        .map(|i| {
            let mut s = DeviceSpec::new(&format!("ram{i}"), Backend::Memory);
            s.size = Some(ByteSize(bytes));
            bdev::open(&s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let take = (shards as usize).min(cpus.len()).max(1);
    let mut e = Engine::start(&ReactorConfig {
        cores: cpus[cpus.len() - take..].to_vec(),
        pin: false,
        ..ReactorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let cfg = StoreConfig {
        shards,
        ..StoreConfig::default()
    };
    e.format(devs.clone(), cfg, true)
        .map_err(|e| e.to_string())?;
    e.open(devs.iter().cloned().map(Some).collect())
        .map_err(|e| e.to_string())?;
    let org = e.org_create("bench").map_err(|e| e.to_string())?;
    let fs = e
        .fs_create("bench", 2, 1, false, u64::MAX)
        .map_err(|e| e.to_string())?;
    e.fs_set_owner(fs, org.id).map_err(|e| e.to_string())?;
    Ok((e, org, fs))
}

/// `flint-bench remote`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 3.0f64)?;
    let qd = a.get("qd", 32usize)?;
    let shards = a.get("shards", 1u32)?;
    let mib = a.get("size-mib", 64u64)?;
    let workers = a.get("workers", 4usize)?;
    let json = a.flag("json");
    a.finish()?;

    let echo = udp_echo(qd, 64, 4096 + wire::HEADER + 4, secs)?;

    let (e, org, fs) = bench_node(4, ((mib * 3) << 20).max(512 << 20), shards)?;
    let engine = Arc::new(e);
    let cfg = ServerConfig {
        workers,
        ..ServerConfig::default()
    };
    let bind = || {
        UdpPort::bind("127.0.0.1:0".parse::<SocketAddr>().expect("valid"))
            .map(|p| Arc::new(p) as Arc<dyn flint_dataplane::nic::Port>)
            .map_err(|e| e.to_string())
    };
    // As the appliance serves: the socket polled by reactor 0.
    let server = Server::start_polled(engine.clone(), vec![(0, bind()?)], cfg.clone())
        .map_err(|e| e.to_string())?;
    let mut c = Client::connect(server.addr(), "bench", &org.key, ClientConfig::default())
        .map_err(|e| e.to_string())?;
    let (ino, _) = c.open("bench", "reads", true).map_err(|e| e.to_string())?;
    let chunk = vec![0xa5u8; 1 << 20];
    for i in 0..mib {
        c.write(ino, i << 20, &chunk).map_err(|e| e.to_string())?;
    }
    c.sync().map_err(|e| e.to_string())?;
    // The same reads through a receive thread reading the socket.
    let threaded = {
        let s2 = Server::start(engine.clone(), bind()?, cfg).map_err(|e| e.to_string())?;
        let mut c2 = Client::connect(s2.addr(), "bench", &org.key, ClientConfig::default())
            .map_err(|e| e.to_string())?;
        let r = remote_reads(&mut c2, ino, mib * 256, qd, secs)?;
        drop(c2);
        s2.stop();
        r
    };
    let flint = remote_reads(&mut c, ino, mib * 256, qd, secs)?;

    let (seq_ino, _) = c.open("bench", "seq", true).map_err(|e| e.to_string())?;
    let (rw, rr) = remote_seq(&mut c, seq_ino, mib * 2, 4)?;
    // The same engine in-process.
    let local = engine.create(fs, "seq-local").map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for i in 0..mib * 2 {
        engine
            .write(local, i << 20, chunk.clone())
            .map_err(|e| e.to_string())?;
    }
    engine.sync().map_err(|e| e.to_string())?;
    let lw = ((mib * 2) << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let t0 = Instant::now();
    for i in 0..mib * 2 {
        engine
            .read(local, i << 20, 1 << 20)
            .map_err(|e| e.to_string())?;
    }
    let lr = ((mib * 2) << 20) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let stats = c.stats();
    drop(c);
    server.stop();

    if json {
        let v = serde_json::json!({"bench": "remote", "qd": qd, "shards": shards,
            "udp_echo_iops": echo.iops, "udp_echo_p50_us": echo.p50, "udp_echo_p99_us": echo.p99,
            "flint_iops": flint.iops, "flint_p50_us": flint.p50, "flint_p99_us": flint.p99,
            "thread_iops": threaded.iops, "thread_p50_us": threaded.p50, "thread_p99_us": threaded.p99,
            "remote_write_gbps": rw, "remote_read_gbps": rr,
            "embedded_write_gbps": lw, "embedded_read_gbps": lr,
            "retransmits": stats.retransmits});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "remote: 4 KiB random reads over loopback UDP, QD{qd}, one client thread, {shards} shard(s), {workers} server workers"
    );
    let mut t = Table::new(&["path", "IOPS", "ratio", "p50", "p99"]);
    t.row(vec![
        "UDP echo, 64 B -> 4 KiB (transport ceiling)".into(),
        format!("{:.0}", echo.iops),
        "1.00x".into(),
        format!("{} us", echo.p50),
        format!("{} us", echo.p99),
    ]);
    t.row(vec![
        "Flint protocol read, socket polled by a reactor".into(),
        format!("{:.0}", flint.iops),
        ratio(flint.iops, echo.iops),
        format!("{} us", flint.p50),
        format!("{} us", flint.p99),
    ]);
    t.row(vec![
        "  the same through a receive thread".into(),
        format!("{:.0}", threaded.iops),
        ratio(threaded.iops, echo.iops),
        format!("{} us", threaded.p50),
        format!("{} us", threaded.p99),
    ]);
    print!("{t}");
    println!(
        "remote: 1 MiB sequential, QD4, {} MiB (retransmits {})",
        mib * 2,
        stats.retransmits
    );
    let mut t = Table::new(&[
        "path",
        "write GB/s",
        "read GB/s",
        "write ratio",
        "read ratio",
    ]);
    t.row(vec![
        "embedded (same engine, in-process)".into(),
        format!("{lw:.2}"),
        format!("{lr:.2}"),
        "1.00x".into(),
        "1.00x".into(),
    ]);
    t.row(vec![
        "remote (protocol over loopback)".into(),
        format!("{rw:.2}"),
        format!("{rr:.2}"),
        ratio(rw, lw),
        ratio(rr, lr),
    ]);
    print!("{t}");
    Ok(())
}
