//! `flint-bench device`: bdevperf-style I/O through reactors and queue pairs,
//! with fio (io_uring or null engine) or raw memcpy as the same-run baseline.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flint_dataplane::bdev::{
    self, Backend, BlockDevice, Completion, DeviceSpec, IoCmd, QpairOptions, QueuePair,
};
use flint_dataplane::clock;
use flint_dataplane::config::ByteSize;
use flint_dataplane::mempool::{BufPool, DmaBuf, HugePages};
use flint_dataplane::poller::{PollStatus, Poller};
use flint_dataplane::reactor::{Core, PollMode, ReactorConfig, ReactorSet};

use crate::args::Args;
use crate::fio;
use crate::report::{cpu_time, ratio, Table};

/// The access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    RandRead,
    RandWrite,
    Read,
    Write,
    RandRw,
}

impl Pattern {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "randread" => Pattern::RandRead,
            "randwrite" => Pattern::RandWrite,
            "read" => Pattern::Read,
            "write" => Pattern::Write,
            "randrw" => Pattern::RandRw,
            _ => {
                return Err(format!(
                    "--rw {s}: use randread, randwrite, read, write or randrw"
                ))
            }
        })
    }

    fn fio_name(self) -> &'static str {
        match self {
            Pattern::RandRead => "randread",
            Pattern::RandWrite => "randwrite",
            Pattern::Read => "read",
            Pattern::Write => "write",
            Pattern::RandRw => "randrw",
        }
    }
}

/// Options of one device run.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOpts {
    pub backend: &'static str,
    pub path: Option<PathBuf>,
    pub size: u64,
    pub rw: Pattern,
    pub mix_read: u32,
    pub bs: u32,
    pub qd: u32,
    pub cores: usize,
    pub cpus: Option<Vec<usize>>,
    pub seconds: u64,
    pub poll: &'static str,
    pub spin_us: u64,
    pub sqpoll: bool,
    pub pin: bool,
    pub batch_submit: bool,
    pub iopoll: bool,
}

/// What one side (Flint or a baseline) measured.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub name: String,
    pub iops: f64,
    pub mb_per_sec: f64,
    pub cpu_ns_per_io: f64,
    /// p50, p99, p99.9, max in microseconds.
    pub lat_us: [f64; 4],
    pub errors: u64,
}

struct JobResult {
    ios: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

/// One core's I/O generator: owns its queue pair, buffers and histogram.
struct Job {
    qp: Box<dyn QueuePair>,
    pool: BufPool,
    bufs: Vec<Option<DmaBuf>>,
    stamp: Vec<u64>,
    blocks_per_io: u32,
    span: u64,
    rw: Pattern,
    mix_read: u32,
    seq_next: u64,
    rng: u64,
    deadline: u64,
    started: bool,
    stopping: bool,
    result: Option<JobResult>,
    done: mpsc::Sender<JobResult>,
    comps: [Completion; 64],
}

impl Job {
    #[inline]
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap, good enough for offsets.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[inline]
    fn issue(&mut self, slot: usize, now: u64) -> bool {
        let (lba, read) = match self.rw {
            Pattern::Read | Pattern::Write => {
                let l = self.seq_next;
                self.seq_next = (self.seq_next + 1) % self.span;
                (l, self.rw == Pattern::Read)
            }
            Pattern::RandRead => (self.next_rand() % self.span, true),
            Pattern::RandWrite => (self.next_rand() % self.span, false),
            Pattern::RandRw => {
                let r = self.next_rand();
                ((r >> 8) % self.span, (r % 100) < u64::from(self.mix_read))
            }
        };
        let lba = lba * u64::from(self.blocks_per_io);
        let Some(buf) = self.bufs[slot].as_mut() else {
            return false;
        };
        let cmd = if read {
            IoCmd::read(lba, self.blocks_per_io, buf.as_mut_ptr(), slot as u64)
        } else {
            IoCmd::write(lba, self.blocks_per_io, buf.as_ptr(), slot as u64)
        };
        self.stamp[slot] = now;
        // SAFETY: the buffer stays in `self.bufs[slot]`, untouched, until the
        // completion tagged `slot` is reaped in `poll`; the pool outlives the
        // queue pair (both are dropped with the job, the qpair first).
        match unsafe { self.qp.submit(&cmd) } {
            Ok(()) => true,
            Err(e) => {
                let r = self.result.as_mut().expect("result lives until done");
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }
}

impl Poller for Job {
    fn name(&self) -> &str {
        "bench-job"
    }

    fn poll(&mut self, core: &mut Core) -> PollStatus {
        let now = clock::ticks();
        if !self.started {
            self.started = true;
            for slot in 0..self.bufs.len() {
                self.issue(slot, now);
            }
            self.qp.flush();
            return PollStatus::Busy;
        }
        let mut comps = self.comps;
        let n = self.qp.poll(&mut comps);
        if n > 0 {
            let now = clock::ticks();
            let resubmit = !self.stopping && now < self.deadline;
            let mut ios = 0;
            let mut errs = 0;
            for c in &comps[..n] {
                let slot = c.tag as usize;
                let r = self.result.as_mut().expect("result lives until done");
                match c.result {
                    Ok(bytes) => {
                        let _ = r.hist.record(now.saturating_sub(self.stamp[slot]).max(1));
                        r.bytes += u64::from(bytes);
                        ios += 1;
                    }
                    Err(e) => {
                        errs += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                if resubmit {
                    self.issue(slot, now);
                }
            }
            let r = self.result.as_mut().expect("result lives until done");
            r.ios += ios;
            r.errors += errs;
            core.stats().add_ios(ios);
            core.stats().add_io_errors(errs);
            if resubmit {
                self.qp.flush();
            }
        }
        if self.qp.in_flight() == 0 && (self.stopping || clock::ticks() >= self.deadline) {
            if let Some(r) = self.result.take() {
                let _ = self.done.send(r);
            }
            for b in self.bufs.iter_mut().filter_map(Option::take) {
                let _ = self.pool.put(b);
            }
            return PollStatus::Done;
        }
        if n > 0 || (!self.qp.wakes_on_completion() && self.qp.in_flight() > 0) {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn in_flight(&self) -> usize {
        self.qp.in_flight() as usize
    }

    fn stop(&mut self, _core: &mut Core) {
        self.stopping = true;
    }
}

fn start_job(
    core: &mut Core,
    dev: &Arc<dyn BlockDevice>,
    o: &DeviceOpts,
    seed: u64,
    deadline: u64,
    done: mpsc::Sender<JobResult>,
) -> Result<(), String> {
    let g = dev.geometry();
    let mut qp = dev
        .queue_pair(core, &QpairOptions { depth: o.qd })
        .map_err(|e| e.to_string())?;
    let mut pool = BufPool::new(o.qd, o.bs as usize, HugePages::Auto).map_err(|e| e.to_string())?;
    // SAFETY: the pool is stored in the same Job as the queue pair and the
    // qpair field is declared (and so dropped) first.
    unsafe { qp.register_memory(pool.region()) }.map_err(|e| e.to_string())?;
    let bufs = (0..o.qd).map(|_| pool.get()).collect::<Vec<_>>();
    let blocks_per_io = o.bs / g.block_size;
    let job = Job {
        qp,
        pool,
        bufs,
        stamp: vec![0; o.qd as usize],
        blocks_per_io,
        span: g.blocks / u64::from(blocks_per_io),
        rw: o.rw,
        mix_read: o.mix_read,
        seq_next: seed % (g.blocks / u64::from(blocks_per_io)),
        rng: seed | 1,
        deadline,
        started: false,
        stopping: false,
        result: Some(JobResult {
            ios: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            hist: Histogram::new_with_bounds(1, clock::ticks_per_sec() * 60, 3)
                .map_err(|e| e.to_string())?,
        }),
        done,
        comps: [Completion::EMPTY; 64],
    };
    core.add_poller(job);
    Ok(())
}

/// Runs Flint's side of a device benchmark.
fn run_flint(o: &DeviceOpts, dev: Arc<dyn BlockDevice>, quiet: bool) -> Result<Figures, String> {
    let mut cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    if o.cores > cpus.len() {
        return Err(format!(
            "--cores {}: only {} CPUs are available",
            o.cores,
            cpus.len()
        ));
    }
    // Leave the lowest CPUs to the harness and the OS when we can.
    let cpus = match &o.cpus {
        Some(list) => list.clone(),
        None => cpus.split_off(cpus.len() - o.cores),
    };
    let cfg = ReactorConfig {
        cores: cpus,
        poll_mode: if o.poll == "busy" {
            PollMode::Busy
        } else {
            PollMode::Adaptive
        },
        spin_us: o.spin_us,
        pin: o.pin,
        ..ReactorConfig::default()
    };
    let set = ReactorSet::start(&cfg).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let cpu0 = cpu_time();
    let deadline = clock::ticks() + clock::duration_to_ticks(Duration::from_secs(o.seconds));
    for i in 0..set.len() {
        let dev = dev.clone();
        let opts = o.clone();
        let tx = tx.clone();
        let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1);
        set.call(i, move |core| {
            start_job(core, &dev, &opts, seed, deadline, tx)
        })
        .map_err(|e| e.to_string())??;
    }
    drop(tx);
    let tty = std::io::stderr().is_terminal() && !quiet;
    let mut last = 0u64;
    let mut results = Vec::new();
    while results.len() < set.len() {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => results.push(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let ios: u64 = set.stats().iter().map(|s| s.ios).sum();
                if !quiet {
                    let line = format!(
                        "  flint {}: {:>4.0}s {:>12.0} IOPS",
                        o.backend,
                        t0.elapsed().as_secs_f64(),
                        (ios - last) as f64
                    );
                    if tty {
                        eprint!("\r{line}");
                    } else {
                        eprintln!("{line}");
                    }
                }
                last = ios;
                if t0.elapsed() > Duration::from_secs(o.seconds + 30) {
                    return Err("benchmark jobs did not finish (device hung?)".into());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("a benchmark job failed to report".into())
            }
        }
    }
    if tty {
        eprintln!();
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    set.shutdown();
    let mut hist = Histogram::<u64>::new_with_bounds(1, clock::ticks_per_sec() * 60, 3)
        .map_err(|e| e.to_string())?;
    let (mut ios, mut bytes, mut errors) = (0, 0, 0);
    for r in &results {
        let _ = hist.add(&r.hist);
        ios += r.ios;
        bytes += r.bytes;
        errors += r.errors;
        if let Some(e) = &r.first_error {
            eprintln!("  flint: I/O errors, first: {e}");
        }
    }
    let us = |t: u64| clock::ticks_to_ns(t) as f64 / 1000.0;
    Ok(Figures {
        name: format!("flint {}", o.backend),
        iops: ios as f64 / wall,
        mb_per_sec: bytes as f64 / wall / 1e6,
        cpu_ns_per_io: if ios > 0 { cpu * 1e9 / ios as f64 } else { 0.0 },
        lat_us: [
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.value_at_quantile(0.999)),
            us(hist.max()),
        ],
        errors,
    })
}

fn fio_args(o: &DeviceOpts, engine: &str) -> Vec<String> {
    let mut a = vec![
        "--name=baseline".to_string(),
        format!("--ioengine={engine}"),
        format!("--rw={}", o.rw.fio_name()),
        format!("--rwmixread={}", o.mix_read),
        format!("--bs={}", o.bs),
        format!("--iodepth={}", o.qd),
        format!("--numjobs={}", o.cores),
        format!("--runtime={}", o.seconds),
        "--time_based".to_string(),
        format!("--size={}", o.size),
        "--randrepeat=0".to_string(),
        "--norandommap".to_string(),
        "--thread".to_string(),
    ];
    if engine == "io_uring" {
        let path = o.path.as_ref().expect("uring runs have a path");
        a.push(format!("--filename={}", path.display()));
        a.push("--direct=1".into());
        a.push("--fixedbufs=1".into());
        a.push("--registerfiles=1".into());
        if o.sqpoll {
            a.push("--sqthread_poll=1".into());
        }
        if o.iopoll {
            a.push("--hipri=1".into());
        }
    }
    a
}

/// Raw memcpy of the same block size from random offsets of a region the
/// size of the device: the ceiling for the memory backend.
fn run_memcpy(o: &DeviceOpts) -> Figures {
    let size = o.size as usize;
    let bs = o.bs as usize;
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; bs];
    let blocks = (size / bs) as u64;
    let mut rng = 0x1234_5678_9abc_def1u64;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let end = Duration::from_secs(o.seconds);
    let mut ios = 0u64;
    while t0.elapsed() < end {
        for _ in 0..4096 {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let b = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks) as usize;
            dst.copy_from_slice(&src[b * bs..b * bs + bs]);
            std::hint::black_box(&mut dst);
        }
        ios += 4096;
    }
    let wall = t0.elapsed().as_secs_f64();
    Figures {
        name: "memcpy (raw)".into(),
        iops: ios as f64 / wall,
        mb_per_sec: (ios * bs as u64) as f64 / wall / 1e6,
        cpu_ns_per_io: (cpu_time() - cpu0) * 1e9 / ios as f64,
        lat_us: [0.0; 4],
        errors: 0,
    }
}

/// Writes a file once so reads hit real blocks, not unwritten extents.
fn prepare_file(path: &PathBuf, size: u64) -> Result<(), String> {
    if std::fs::metadata(path)
        .map(|m| m.len() >= size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    eprintln!("  laying out {} ({})", path.display(), ByteSize(size));
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x243f_6a88_85a3_08d3u64;
    for w in chunk.chunks_mut(8) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        w.copy_from_slice(&x.to_le_bytes());
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| format!("{}: {e}", path.display()))
}

/// `flint-bench device`.
pub fn main(mut a: Args) -> Result<(), String> {
    let backend = match a.get("backend", "uring".to_string())?.as_str() {
        "uring" => "uring",
        "memory" => "memory",
        "null" => "null",
        other => return Err(format!("--backend {other}: use uring, memory or null")),
    };
    let size = ByteSize::parse(&a.get(
        "size",
        if backend == "uring" { "1GiB" } else { "256MiB" }.to_string(),
    )?)?;
    let o = DeviceOpts {
        backend,
        path: match backend {
            "uring" => Some(PathBuf::from(
                a.get("path", "/var/tmp/flint-bench.img".to_string())?,
            )),
            _ => None,
        },
        size: size.0,
        rw: Pattern::parse(&a.get("rw", "randread".to_string())?)?,
        mix_read: a.get("rwmixread", 70u32)?,
        bs: a.get("bs", 4096u32)?,
        qd: a.get("qd", 32u32)?,
        cores: a.get("cores", 1usize)?,
        cpus: None,
        seconds: a.get("time", 10u64)?,
        poll: if a.get("poll", "adaptive".to_string())? == "busy" {
            "busy"
        } else {
            "adaptive"
        },
        spin_us: a.get("spin-us", ReactorConfig::default().spin_us)?,
        sqpoll: a.flag("sqpoll"),
        pin: !a.flag("no-pin"),
        batch_submit: a.flag("batch-submit"),
        iopoll: a.flag("iopoll"),
    };
    let mut o = o;
    if let Some(list) = a
        .get("cpus", String::new())
        .map(|s| (!s.is_empty()).then_some(s))?
    {
        let cpus = list
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("--cpus {list}: write CPU numbers like 0,1"))?;
        o.cores = cpus.len();
        o.cpus = Some(cpus);
    }
    let json = a.flag("json");
    let no_baseline = a.flag("no-baseline");
    a.finish()?;
    if o.bs == 0 || !o.bs.is_multiple_of(4096) || o.qd == 0 || o.cores == 0 || o.seconds == 0 {
        return Err("--bs must be a multiple of 4096; --qd, --cores and --time above 0".into());
    }

    let mut spec = DeviceSpec::new(
        "bench0",
        match backend {
            "uring" => Backend::Uring,
            "memory" => Backend::Memory,
            _ => Backend::Null,
        },
    );
    spec.size = Some(size);
    spec.path = o.path.clone();
    spec.sqpoll = o.sqpoll;
    spec.iopoll = o.iopoll;
    spec.batch_submit = o.batch_submit;
    if let Some(p) = &o.path {
        prepare_file(p, o.size)?;
    }
    let dev = bdev::open(&spec).map_err(|e| e.to_string())?;

    let mut rows = vec![run_flint(&o, dev, json)?];
    if !no_baseline {
        let baseline = match backend {
            "uring" | "null" if fio::available() => {
                let engine = if backend == "uring" {
                    "io_uring"
                } else {
                    "null"
                };
                if !json {
                    eprintln!("  fio {engine}: running {}s baseline", o.seconds);
                }
                let r = fio::run(&fio_args(&o, engine))?;
                Some(Figures {
                    name: format!("fio {engine}"),
                    iops: r.iops,
                    mb_per_sec: r.bytes_per_sec / 1e6,
                    cpu_ns_per_io: r.cpu_ns_per_io,
                    lat_us: r.lat_us,
                    errors: 0,
                })
            }
            "memory" => Some(run_memcpy(&o)),
            _ => {
                eprintln!("  fio is not installed: no baseline (apt-get install fio)");
                None
            }
        };
        rows.extend(baseline);
    }
    report(&o, &rows, json);
    Ok(())
}

fn report(o: &DeviceOpts, rows: &[Figures], json: bool) {
    if json {
        let v = serde_json::json!({
            "bench": "device",
            "options": o,
            "results": rows,
            "ratio_iops": rows.get(1).map(|b| ratio(rows[0].iops, b.iops)),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "device: {} {} bs={} qd={} cores={} {}s poll={}",
        o.backend,
        o.rw.fio_name(),
        o.bs,
        o.qd,
        o.cores,
        o.seconds,
        o.poll
    );
    let mut t = Table::new(&[
        "engine",
        "IOPS",
        "IOPS/core",
        "MB/s",
        "cpu ns/IO",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
    ]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            format!("{:.0}", r.iops),
            format!("{:.0}", r.iops / o.cores as f64),
            format!("{:.1}", r.mb_per_sec),
            format!("{:.0}", r.cpu_ns_per_io),
            format!("{:.1}", r.lat_us[0]),
            format!("{:.1}", r.lat_us[1]),
            format!("{:.1}", r.lat_us[2]),
            format!("{:.1}", r.lat_us[3]),
        ]);
    }
    if let [f, b, ..] = rows {
        t.row(vec![
            "ratio flint/base".into(),
            ratio(f.iops, b.iops),
            ratio(f.iops, b.iops),
            ratio(f.mb_per_sec, b.mb_per_sec),
            ratio(f.cpu_ns_per_io, b.cpu_ns_per_io),
            ratio(f.lat_us[0], b.lat_us[0]),
            ratio(f.lat_us[1], b.lat_us[1]),
            ratio(f.lat_us[2], b.lat_us[2]),
            ratio(f.lat_us[3], b.lat_us[3]),
        ]);
    }
    print!("{t}");
}
