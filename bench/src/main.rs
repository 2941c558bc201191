//! # flint-bench
//!
//! Flint's benchmark harness. Every figure is printed beside a baseline
//! measured in the same invocation (fio's engines, raw memcpy, Rust's std
//! channel), as a ratio, because the machines it runs on are shared and noisy.
//!
//! - `flint-bench device`: bdevperf-style I/O through reactors and queue
//!   pairs on the `uring`, `memory` or `null` backend.
//! - `flint-bench ring`: cross-core message rate over the reactor mesh.
//! - `flint-bench ec`: erasure-code encoding beside ISA-L.
//! - `flint-bench pipeline`: the write pipeline beside its raw codecs.
//! - `flint-bench engine`: store reads beside raw device reads.
//! - `flint-bench net` (feature `dpdk`): the protocol over DPDK memif beside
//!   kernel UDP.
//! - `flint-bench meta`: namespace operations beside tmpfs and the disk's
//!   file system.
//! - `flint-bench fill`: sequential writes until the devices are full,
//!   window by window, beside a plain file on the same disk.
//! - `flint-bench files`: many small files created and written, window by
//!   window, beside the disk's file system; then the reopen time.
//! - `flint-bench remote`: the data protocol over loopback beside a UDP
//!   echo, and remote sequential I/O beside the engine in-process.
//! - `flint-bench slices`: an engine on peer nodes' slices beside local
//!   devices, degraded reads and the rebuild beside the healthy read rate.
//! - `flint-bench cluster`: a running cluster's aggregate rates with
//!   clients spread over its buckets, per CPU-second
//!   (`scripts/cluster-bench.sh`: 1, 2, 4 and 6 nodes).
//! - `flint-bench nvmf`: the NVMe/TCP target over loopback beside a TCP
//!   echo of the same sizes and depths.
//! - `flint-bench posix`: dataset epoch, checkpoint and metadata workloads
//!   on a mounted directory beside a baseline directory (ext4).

mod args;
mod cluster;
mod device;
mod ec;
mod engine;
mod files;
mod fill;
mod fio;
mod meta;
#[cfg(feature = "dpdk")]
mod net;
mod nvmf;
mod pipeline;
mod posix;
mod remote;
mod report;
mod ring;
mod rng;
mod slices;
mod snapshots;

const HELP: &str = "\
flint-bench: Flint's benchmarks, each beside its baseline from the same run

USAGE:
  flint-bench device [options]   block I/O through reactors and queue pairs
      --backend uring|memory|null   (uring)  baseline: fio io_uring | memcpy | fio null
      --path FILE                   (/var/tmp/flint-bench.img, uring only; laid out if missing)
      --size SIZE                   (1GiB for uring, 256MiB otherwise)
      --rw randread|randwrite|read|write|randrw   (randread)
      --rwmixread PCT               (70)
      --bs BYTES --qd N --cores N --time SECS     (4096 32 1 10)
      --cpus LIST                   CPUs for the reactors (default: the last --cores CPUs)
      --poll adaptive|busy          (adaptive)
      --spin-us N                   adaptive: idle spin before parking (reactor default)
      --sqpoll --iopoll             io_uring options (iopoll falls back if unsupported)
      --batch-submit                uring: one doorbell per reactor iteration
      --no-pin                      do not pin reactor threads
      --no-baseline --json
  flint-bench ring [options]     cross-core message rate
      --time SECS --batch N --capacity N --json
  flint-bench ec [options]       erasure-code encode vs ISA-L ec_encode_data
      --time SECS --stripe BYTES (1 s, 1 MiB) --json
  flint-bench pipeline [options] whole write pipeline vs the raw codecs chained
      --size-mib N --k N --m N --chunk BYTES (128 8 2 131072) --json
      --dataset random|text|mixed|all (all)
  flint-bench engine [options]   store 4 KiB random reads, healthy and degraded
      --time SECS --k N --m N --size-mib N (2 4 2 64) --json
  flint-bench net [options]      (feature dpdk) the protocol over DPDK memif vs kernel UDP
      --time SECS (2) --json
  flint-bench meta [options]     namespace mkdir/create/stat/readdir/rename/unlink vs tmpfs and the disk fs
      --files N --dirs N --cache-mib N --shards N --clients N --protocol-files N
      (200000 100 256 1 4 min(files, 50000))
      --disk-dir DIR --tmpfs-dir DIR (/var/tmp/flint-bench-meta, /dev/shm/flint-bench-meta) --json
  flint-bench fill [options]     1 MiB sequential writes until the devices are full, per window, vs a plain file
  flint-bench snapshots [--gib 10 --snapshots 100 --writes 20000 --memory]   snapshot creation vs a checkpoint;
                                 4 KiB overwrite p50/p99 with N snapshots vs none
      --devices N (6) --dev-mib MIB (1024) --gib G (0: until full) --window MIB (256)
      --dir DIR (/var/tmp/flint-bench-fill) --json
  flint-bench files [options]    create + 4 KiB write per file, per window, vs the disk fs; reopen time
      --files N --window N (20000 5000) --dir DIR (/var/tmp/flint-bench-files) --json
  flint-bench remote [options]   protocol reads vs UDP echo; remote vs embedded 1 MiB I/O
  flint-bench nvmf [options]     NVMe/TCP target: 4k QD1/QD32, writes, 128k reads vs a TCP echo
  flint-bench slices [options]   an engine on 3 nodes' slices vs local RAM; degraded reads; rebuild
  flint-bench cluster [options]  a running cluster's buckets (--etcd) or a node (--targets), clients spread
      --time SECS --qd N --shards N --size-mib N --workers N (3 32 1 64 4) --json
  flint-bench posix [options]    dataset epoch, checkpoint, metadata on a mount vs a baseline dir
      --dir MOUNT --baseline DIR (/var/tmp) --files N --dirs N --readers N --ckpt-mib N
      --meta-files N (100000 1000 8 4096 20000) --json --json-out FILE
";

fn main() {
    // FLINT_BENCH_LOG=info shows the engine's own events (shard recovery
    // times among them).
    let level = match std::env::var("FLINT_BENCH_LOG").as_deref() {
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprint!("{HELP}");
        std::process::exit(2);
    };
    let flags = [
        "json",
        "memory",
        "no-baseline",
        "sqpoll",
        "iopoll",
        "no-pin",
        "batch-submit",
    ];
    let result = args::Args::parse(&argv[1..], &flags).and_then(|a| match cmd.as_str() {
        "device" => device::main(a),
        "ring" => ring::main(a),
        "ec" => ec::main(a),
        "pipeline" => pipeline::main(a),
        "engine" => engine::main(a),
        "meta" => meta::main(a),
        "fill" => fill::main(a),
        "snapshots" => snapshots::main(a),
        "files" => files::main(a),
        "remote" => remote::main(a),
        "nvmf" => nvmf::main(a),
        "slices" => slices::main(a),
        "cluster" => cluster::main(a),
        "posix" => posix::main(a),
        #[cfg(feature = "dpdk")]
        "net" => net::main(a),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown benchmark `{other}`; try flint-bench help")),
    });
    if let Err(e) = result {
        eprintln!("flint-bench: {e}");
        std::process::exit(1);
    }
}
