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

step "fio engine: build against the installed fio's headers, run the verify jobs"
fio_src=$(scripts/fio-headers.sh)
cc -Wall -Werror -O2 -g -D_GNU_SOURCE -fPIC -shared -include "$fio_src/config-host.h" \
  -I"$fio_src" -I ffi/capi/include -o target/release/libflint_fio.so ffi/fio/flint_fio.c \
  -L target/release -lflint -Wl,-rpath,"$PWD/target/release"
export FLINT_FIO=$PWD/target/release/libflint_fio.so FLINT_FIO_SECONDS=2
fio ffi/fio/jobs/verify.fio --output-format=terse >/dev/null
fio ffi/fio/jobs/verify-reopen.fio --output-format=terse >/dev/null
fio ffi/fio/jobs/randread-4k.fio | grep -E 'IOPS|err='
fio --name=null-baseline --ioengine=null --rw=randread --bs=4k --iodepth=32 --size=128m \
  --time_based --runtime=2 --thread | grep -E 'IOPS'

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
