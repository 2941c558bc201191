#!/usr/bin/env bash
# Runs Flint's main job on the embedded default: a single-node appliance on
# six file-backed devices under ./data (configs/embedded.toml), with a short
# workload through the POSIX mount (flint mount: a small dataset written,
# listed and read back with ordinary tools, a checkpoint saved and loaded),
# the CLI, the C ABI and fio's remote mode — including a verify across a
# restart of the appliance — then unmounts and stops it with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p flint-engine --bin flint
cargo build --release -p flint-capi --features isal
fio_src=$(scripts/fio-headers.sh)
cc -Wall -Werror -O2 -g -D_GNU_SOURCE -fPIC -shared -include "$fio_src/config-host.h" \
  -I"$fio_src" -I ffi/capi/include -o target/release/libflint_fio.so ffi/fio/flint_fio.c \
  -L target/release -lflint -Wl,-rpath,"$PWD/target/release"
cc -O2 -I ffi/capi/include ffi/capi/examples/capi_remote.c -L target/release -lflint \
  -Wl,-rpath,"$PWD/target/release" -o target/release/capi_remote

cfg=configs/embedded.toml
flint="target/release/flint --config $cfg"
mkdir -p data
mnt=$PWD/data/mnt
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; scripts/appliance.sh stop "$cfg" 2>/dev/null || true' EXIT
echo "== flint serve --init (formats ./data on the first run; log in $cfg.log)"
scripts/appliance.sh start "$cfg" --init
$flint status
$flint device list
$flint fs list

echo "== flint mount: the file system as POSIX (FUSE), used by ordinary tools"
mkdir -p "$mnt"
$flint mount /default "$mnt" -o log="$PWD/data/mount.log"
df -h "$mnt"
rm -rf "$mnt/dataset" "$mnt/checkpoint.pt"
mkdir -p "$mnt/dataset"
for d in $(seq 0 9); do
  mkdir "$mnt/dataset/class$d"
  for f in $(seq 0 19); do
    head -c $((10000 + (d * 20 + f) * 997)) /dev/urandom >"$mnt/dataset/class$d/img$f.bin"
  done
done
echo "dataset: $(find "$mnt/dataset" -type f | wc -l) files, $(du -sh "$mnt/dataset" | cut -f1)"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
find "$mnt/dataset" -type f -print0 | shuf -z | xargs -0 -P 8 -n 20 cat | wc -c | xargs echo "epoch read bytes:"
head -c 64000000 /dev/urandom >data/checkpoint.pt
dd if=data/checkpoint.pt of="$mnt/checkpoint.pt" bs=1M conv=fsync status=none
cmp data/checkpoint.pt "$mnt/checkpoint.pt" && echo "checkpoint saved (fsync) and loaded intact"
ls -la "$mnt"
$flint umount "$mnt"

echo "== put and get a file over the data protocol"
head -c 8000000 /dev/urandom >data/sample.bin
$flint put default/sample.bin data/sample.bin
$flint get default/sample.bin data/sample.back
cmp data/sample.bin data/sample.back && echo "read back intact"

echo "== the C ABI in remote mode"
target/release/capi_remote 127.0.0.1:7400 default data/default.key default

echo "== fio, remote mode: write with crc32c, restart the appliance, verify"
export FLINT_FIO=$PWD/target/release/libflint_fio.so FLINT_ADDR=127.0.0.1:7400 \
  FLINT_ORG=default FLINT_KEY=$PWD/data/default.key FLINT_FS=default FLINT_FIO_SECONDS=5
fio ffi/fio/jobs/remote-write.fio | grep -E 'IOPS|err='
scripts/appliance.sh stop "$cfg"
scripts/appliance.sh start "$cfg"
fio ffi/fio/jobs/remote-verify-only.fio | grep -E 'IOPS|err='
fio ffi/fio/jobs/remote-randread-4k.fio | grep -E 'IOPS|err=|clat \(|50.00th|99.00th'

echo "== status, stats and events"
$flint status
$flint stats
$flint events
echo "== SIGTERM: drain, checkpoint, exit 0"
scripts/appliance.sh stop "$cfg"
trap - EXIT
echo "stopped cleanly; benchmarks: scripts/bench.sh"
