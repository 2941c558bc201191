#!/usr/bin/env bash
# Runs Flint on an embedded default: reactors driving a file-backed device
# under ./data, a RAM device and a null device, with a short workload on
# each beside its baseline (fio's io_uring and null engines, raw memcpy).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p flint-bench --features isal
mkdir -p data
bench=target/release/flint-bench
$bench device --backend uring --path data/file0.img --size 256MiB --time 5
$bench device --backend memory --time 3
$bench device --backend null --time 3
$bench ring --time 2
$bench ec
