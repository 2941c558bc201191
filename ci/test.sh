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

step "C ABI: build libflint.so, compile the C example with cc, run it"
cargo build --release -p flint-capi --features isal
capi_tmp=$(mktemp -d /var/tmp/flint-capi.XXXXXX)
cc -Wall -Wextra -Werror -O2 -I ffi/capi/include ffi/capi/examples/capi_demo.c \
  -L target/release -lflint -o "$capi_tmp/capi_demo"
LD_LIBRARY_PATH=target/release "$capi_tmp/capi_demo" "$capi_tmp"
exported=$(nm -D --defined-only target/release/libflint.so | awk '{print $3}' | grep -v '^FLINT_' | sort | tr '\n' ' ')
expected=$(sed -n 's/^ *\(flint_[a-z_]*\);$/\1/p' ffi/capi/flint.map | sort | tr '\n' ' ')
if [ "$exported" != "$expected" ]; then
  echo "libflint.so exports [$exported], flint.map lists [$expected]" >&2
  exit 1
fi
rm -rf "$capi_tmp"

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
