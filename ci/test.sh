#!/usr/bin/env bash
# Flint's whole test suite: set-up, formatting, lints, every test, and a
# smoke run of each benchmark (benchmarks print figures; they assert nothing
# about speed). Runs on a fresh Debian 12 machine with only Rust installed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

step "set-up"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "tests"
cargo test --workspace --all-features

step "benchmark smoke runs"
cargo build --release -p flint-bench --features isal
bench=target/release/flint-bench
tmp=$(mktemp -d /var/tmp/flint-ci.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
$bench device --backend null --time 1
$bench device --backend memory --time 1 --size 64MiB
$bench device --backend uring --path "$tmp/bench.img" --size 64MiB --time 2
$bench ring --time 1
$bench ec --time 0.3
$bench pipeline --size-mib 8
$bench engine --time 0.3 --size-mib 64
cargo run --release -q -p flint-engine --features isal --example demo -- "$tmp/demo"

step "all passed"
