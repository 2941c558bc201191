#!/usr/bin/env bash
# Runs Flint on an embedded default: the engine on six file-backed devices
# under ./data (a 4+2 file system with dedup and compression, a workload, a
# restart with a device missing), then the dataplane and engine benchmarks,
# each beside its baseline (fio's io_uring and null engines, memcpy, ISA-L).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p flint-bench --features isal
mkdir -p data
cargo run --release -q -p flint-engine --features isal --example demo -- data
bench=target/release/flint-bench
$bench device --backend uring --path data/file0.img --size 256MiB --time 5
$bench device --backend memory --time 3
$bench device --backend null --time 3
$bench ring --time 2
$bench ec
$bench pipeline --size-mib 64
$bench engine
