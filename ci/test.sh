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

step "appliance: flint serve, the CLI, the C ABI and fio in remote mode"
cargo build --release -p flint-engine --bin flint
app=$(mktemp -d /var/tmp/flint-app.XXXXXX)
sed -e "s#data/#$app/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17400#' -e 's#127.0.0.1:7480#127.0.0.1:17480#' \
  -e 's#size = "512MiB"#size = "256MiB"#' configs/embedded.toml >"$app/node.toml"
scripts/appliance.sh start "$app/node.toml" --init
flint="target/release/flint --config $app/node.toml"
$flint status
$flint device list
$flint fs list
head -c 3000000 /dev/urandom >"$app/blob"
$flint put default/blob "$app/blob"
$flint get default/blob "$app/blob.back"
cmp "$app/blob" "$app/blob.back"
cc -Wall -Wextra -Werror -O2 -I ffi/capi/include ffi/capi/examples/capi_remote.c \
  -L target/release -lflint -o "$app/capi_remote"
LD_LIBRARY_PATH=target/release "$app/capi_remote" 127.0.0.1:17400 default "$app/data/default.key" default
export FLINT_ADDR=127.0.0.1:17400 FLINT_ORG=default FLINT_KEY=$app/data/default.key FLINT_FS=default
fio ffi/fio/jobs/remote-verify.fio --output-format=terse >/dev/null
fio ffi/fio/jobs/remote-verify-mixed.fio --output-format=terse >/dev/null
fio ffi/fio/jobs/remote-write.fio --output-format=terse >/dev/null
# fio rides through crashes: the appliance is SIGKILLed and restarted three
# times while the verify job writes; it finishes verified.
fio ffi/fio/jobs/remote-verify.fio --output-format=terse >"$app/fio-kills.out" &
fio_pid=$!
for _ in 1 2 3; do
  sleep 0.7
  scripts/appliance.sh kill "$app/node.toml"
  scripts/appliance.sh start "$app/node.toml"
done
wait "$fio_pid"
# Restart the appliance between the write and the verify phase.
scripts/appliance.sh stop "$app/node.toml"
scripts/appliance.sh start "$app/node.toml"
fio ffi/fio/jobs/remote-verify-only.fio --output-format=terse >/dev/null
fio ffi/fio/jobs/remote-randread-4k.fio | grep -E 'IOPS|err='
$flint stats
$flint events
scripts/appliance.sh stop "$app/node.toml"
rm -rf "$app"

step "POSIX mount: pjdfstest, fsx, fsstress, fsracer, SIGKILLs under fsx, two mounts"
scripts/mount-suite.sh

step "snapshots: .snapshots in the mount, EROFS, reclaimable bytes, SIGKILLs, restore, delete"
scripts/snapshot-suite.sh

step "directory quotas and filesystem groups: EDQUOT, df, EXDEV, nesting, grace, SIGKILLs, gauges"
scripts/quota-suite.sh

step "NVMe/TCP: the Linux initiator in a QEMU guest against flint serve (fio verify, ext4, SIGKILL)"
scripts/nvmf-guest.sh

step "NVMe driver: Flint's userspace driver over VFIO on QEMU's emulated NVMe (verify, EIO, reset)"
scripts/nvme-guest.sh

step "cluster: 3-member etcd, 4 nodes; SIGKILL, partition, SIGSTOP, etcd leader loss, rolling restart, drain"
scripts/cluster-test.sh

step "benchmark smoke runs"
cargo build --release -p flint-bench --features isal,dpdk
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
$bench meta --files 20000 --dirs 20 --disk-dir "$tmp/meta" --tmpfs-dir /dev/shm/flint-ci-meta
$bench fill --devices 3 --dev-mib 128 --window 32 --dir "$tmp/fill"
$bench files --files 2000 --window 1000 --dir "$tmp/files"
$bench remote --time 0.5 --size-mib 16
$bench nvmf --time 0.3 --size-mib 64
$bench slices --size-mib 16
FLINT_BENCH_NODES="1 3" FLINT_BENCH_ARGS="--time 0.3 --size-mib 4" scripts/cluster-bench.sh
$bench net --time 0.5
cargo run --release -q -p flint-engine --features isal --example demo -- "$tmp/demo"

step "all passed"
