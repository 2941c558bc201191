#!/usr/bin/env bash
# Runs every benchmark, each beside its baseline from the same run (fio's
# io_uring and null engines, memcpy, ISA-L, a UDP echo, the engine
# in-process).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p flint-bench --features isal,dpdk
mkdir -p data
bench=target/release/flint-bench
$bench device --backend uring --path data/bench.img --size 256MiB --time 5
$bench device --backend memory --time 3
$bench device --backend null --time 3
$bench ring --time 2
$bench ec
$bench pipeline --size-mib 64
$bench engine
$bench remote
$bench net
