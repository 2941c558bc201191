//! `flint-bench nvmf`: the NVMe/TCP target over loopback TCP, driven by
//! the crate's own initiator (one connection per job, pipelined): 4 KiB
//! random reads at QD1 and QD32, 4 KiB random writes at QD32 (each
//! answered once durable), 128 KiB sequential reads at QD8 — each beside a
//! TCP echo of the same request and answer sizes at the same depth (the
//! transport's ceiling here). The Linux initiator and the kernel's own
//! target are compared in a QEMU guest by `scripts/bench-nvmf.sh`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use flint_engine::nvmf::host::Host;
use flint_engine::nvmf::pdu::Digests;
use flint_engine::nvmf::spec::{feature, io};
use flint_engine::nvmf::{NvmfConfig, NvmfServer};
use hdrhistogram::Histogram;

use crate::args::Args;
use crate::remote::bench_node;
use crate::report::{ratio, Table};
use crate::rng::Rng;

const NQN: &str = "nqn.2026-12.io.flint:bench";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:flint-bench";

struct Figures {
    iops: f64,
    p50: u64,
    p99: u64,
}

fn hist() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).map_err(|e| e.to_string())
}

/// A TCP echo: `req` bytes answered with `resp` bytes, `qd` in flight.
fn tcp_echo(qd: usize, req: usize, resp: usize, secs: f64) -> Result<Figures, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; req];
        let out = vec![7u8; resp];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&out).is_err() {
                return;
            }
        }
    });
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    let msg = vec![1u8; req];
    let mut buf = vec![0u8; resp];
    let mut h = hist()?;
    let mut sent = std::collections::VecDeque::new();
    for _ in 0..qd {
        c.write_all(&msg).map_err(|e| e.to_string())?;
        sent.push_back(Instant::now());
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        c.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if let Some(at) = sent.pop_front() {
            let _ = h.record(at.elapsed().as_micros() as u64);
        }
        n += 1;
        c.write_all(&msg).map_err(|e| e.to_string())?;
        sent.push_back(Instant::now());
    }
    let iops = n as f64 / t0.elapsed().as_secs_f64();
    drop(c);
    let _ = t.join();
    Ok(Figures {
        iops,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    })
}

/// `qd` commands of `bs` bytes in flight on one queue for `secs`: random
/// reads or writes over `blocks` 4 KiB blocks, or sequential reads.
fn job(
    q: &mut Host,
    kind: &str,
    bs: usize,
    qd: usize,
    blocks: u64,
    secs: f64,
) -> Result<Figures, String> {
    let mut rng = Rng::new(9);
    let nlb = (bs / 4096) as u32;
    let mut seq = 0u64;
    let data = vec![0xA5u8; bs];
    let mut next = |q: &mut Host, rng: &mut Rng| -> Result<u16, String> {
        let slba = if kind == "seqread" {
            let s = seq;
            seq = (seq + u64::from(nlb)) % (blocks - u64::from(nlb));
            s
        } else {
            rng.next() % (blocks - u64::from(nlb))
        };
        let r = if kind == "randwrite" {
            q.submit(Host::rw(io::WRITE, 1, slba, nlb), Some(data.clone()), 0)
        } else {
            q.submit(Host::rw(io::READ, 1, slba, nlb), None, bs)
        };
        r.map_err(|e| e.to_string())
    };
    let mut h = hist()?;
    let mut sent = HashMap::new();
    for _ in 0..qd {
        sent.insert(next(q, &mut rng)?, Instant::now());
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let c = q.reap().map_err(|e| e.to_string())?;
        if c.status != 0 {
            return Err(format!("{kind} failed with status {:#x}", c.status));
        }
        if let Some(at) = sent.remove(&c.cid) {
            let _ = h.record(at.elapsed().as_micros() as u64);
        }
        n += 1;
        sent.insert(next(q, &mut rng)?, Instant::now());
    }
    let iops = n as f64 / t0.elapsed().as_secs_f64();
    while !sent.is_empty() {
        let c = q.reap().map_err(|e| e.to_string())?;
        sent.remove(&c.cid);
    }
    Ok(Figures {
        iops,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    })
}

/// `flint-bench nvmf`.
pub fn main(mut a: Args) -> Result<(), String> {
    let secs = a.get("time", 3.0f64)?;
    let mib = a.get("size-mib", 256u64)?;
    let shards = a.get("shards", 1u32)?;
    let workers = a.get("workers", 4usize)?;
    a.finish()?;

    let (e, _org, _fs) = bench_node(3, ((mib * 2) << 20).max(512 << 20), shards)?;
    let cfg: NvmfConfig = toml::from_str(&format!(
        "[[subsystem]]\nnqn = \"{NQN}\"\nhosts = [\"{HOST}\"]\n\
         [[subsystem.namespace]]\nfilesystem = \"bench\"\nfile = \"vol\"\nsize = \"{mib}MiB\"\n"
    ))
    .map_err(|e| e.to_string())?;
    cfg.check().map_err(|(k, r)| format!("{k}: {r}"))?;
    let engine = Arc::new(e);
    let subs = cfg.subsystems(&engine)?;
    let server = NvmfServer::start(
        engine.clone(),
        subs,
        "127.0.0.1:0".parse().expect("an address"),
        workers,
        4,
    )
    .map_err(|e| e.to_string())?;
    let d = Digests::default();
    let (mut admin, c) =
        Host::connect(server.addr(), d, NQN, HOST, 0, 0xFFFF, 0).map_err(|e| e.to_string())?;
    if c.status != 0 {
        return Err(format!("connect failed: {c:?}"));
    }
    admin.enable().map_err(|e| e.to_string())?;
    admin
        .set_feature(feature::NUM_QUEUES, 0)
        .map_err(|e| e.to_string())?;
    let (mut q, c) = Host::connect(server.addr(), d, NQN, HOST, 1, admin.cntlid, 0)
        .map_err(|e| e.to_string())?;
    if c.status != 0 {
        return Err(format!("I/O queue connect failed: {c:?}"));
    }
    // Fill the volume so reads find data.
    let blocks = (mib << 20) / 4096;
    let chunk = 1 << 20;
    for at in (0..mib << 20).step_by(chunk) {
        let c = q
            .write(1, at / 4096, 12, vec![0x3Cu8; chunk])
            .map_err(|e| e.to_string())?;
        if c.status != 0 {
            return Err(format!("fill failed with status {:#x}", c.status));
        }
    }
    println!(
        "flint-bench nvmf: one connection, {mib} MiB volume on RAM devices (2+1, no reduction), {shards} shard(s); \
         baseline: a TCP echo of the same sizes and depth"
    );
    let mut t = Table::new(&[
        "job",
        "IOPS",
        "MiB/s",
        "p50 us",
        "p99 us",
        "TCP echo IOPS",
        "p50 us",
        "ratio",
    ]);
    // (name, kind, block size, depth, request bytes, answer bytes on the wire)
    let jobs = [
        ("randread 4k QD1", "randread", 4096, 1, 72, 24 + 4096 + 24),
        ("randread 4k QD32", "randread", 4096, 32, 72, 24 + 4096 + 24),
        ("randwrite 4k QD32", "randwrite", 4096, 32, 72 + 4096, 24),
        (
            "seqread 128k QD8",
            "seqread",
            128 << 10,
            8,
            72,
            24 + (128 << 10) + 24,
        ),
    ];
    for (name, kind, bs, qd, req, resp) in jobs {
        let f = job(&mut q, kind, bs, qd, blocks, secs)?;
        let b = tcp_echo(qd, req, resp, secs)?;
        t.row(vec![
            name.into(),
            format!("{:.0}", f.iops),
            format!("{:.1}", f.iops * bs as f64 / f64::from(1 << 20)),
            f.p50.to_string(),
            f.p99.to_string(),
            format!("{:.0}", b.iops),
            b.p50.to_string(),
            ratio(f.iops, b.iops),
        ]);
    }
    print!("{t}");
    drop(q);
    drop(admin);
    server.stop();
    Ok(())
}
