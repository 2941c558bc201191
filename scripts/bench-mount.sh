#!/usr/bin/env bash
# The POSIX mount's benchmarks, each beside ext4 on the same disk in the
# same run (root: FUSE mounts and dropping caches):
#   - flint-bench posix: dataset epoch (write, walk, 8-reader random-order
#     read), checkpoint save (1 MiB writes + fsync) and load, create / stat
#     / unlink, on the mount and on an ext4 directory;
#   - fio on the mount and on ext4: psync and libaio, 4 KiB random read
#     QD32, 1 MiB sequential write and read, buffered and direct=1.
# The appliance is the embedded default on 4 GiB file devices (a 4+2 file
# system with dedup and compression, durable acknowledgements).
#   scripts/bench-mount.sh [FILES] [CKPT_MIB]     (defaults 20000 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}
ckpt=${2:-1024}
cargo build --release -q -p flint-engine --bin flint
cargo build --release -q -p flint-bench
flint=target/release/flint
work=$(mktemp -d /var/tmp/flint-bench-mount.XXXXXX)
mkdir -p "$work/mnt" "$work/ext4"
cleanup() {
  set +e
  mountpoint -q "$work/mnt" && umount -l "$work/mnt"
  [ -f "$work/node.toml.pid" ] && kill -TERM "$(cat "$work/node.toml.pid")" 2>/dev/null
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT
sed -e "s#data/#$work/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17600#' -e 's#127.0.0.1:7480#127.0.0.1:17680#' \
  -e 's#size = "512MiB"#size = "4GiB"#' -e 's#capacity = "4GiB"#capacity = "15GiB"#' \
  configs/embedded.toml >"$work/node.toml"
scripts/appliance.sh start "$work/node.toml" --init
$flint --config "$work/node.toml" mount /default "$work/mnt" -o log="$work/mount.log"
grep -E "kernel FUSE|readahead" "$work/mount.log"

if [ "${FLINT_BENCH_POSIX:-1}" = 1 ]; then
target/release/flint-bench posix --dir "$work/mnt" --baseline "$work/ext4" \
  --files "$files" --dirs $((files / 100 > 0 ? files / 100 : 1)) --ckpt-mib "$ckpt" --meta-files 10000 \
  --json-out "${FLINT_BENCH_OUT:-/var/tmp}/flint-posix.json"
fi

# fio: the same jobs on the mount and on ext4, on one 512 MiB file laid
# out once in 1 MiB writes.
for d in "$work/mnt" "$work/ext4"; do
  dd if=/dev/urandom of="$d/fio.dat" bs=1M count=512 conv=fsync status=none
done
fio_job() { # DIR NAME ARGS...
  local dir=$1 name=$2
  shift 2
  echo 3 >/proc/sys/vm/drop_caches
  fio --name="$name" --filename="$dir/fio.dat" --size=512m --runtime=8 --time_based --group_reporting \
    --output-format=terse --terse-version=3 "$@" 2>/dev/null |
    awk -F';' '{ printf "%.0f %.0f %.0f %.0f\n", $8, $7/1024, $49, $48/1024 }'
}
printf '\n%-36s %12s %12s %12s %12s %7s\n' "fio job" "mount IOPS" "mount MiB/s" "ext4 IOPS" "ext4 MiB/s" "ratio"
row() { # LABEL ARGS...
  local label=$1
  shift
  read -r fr fb fw fwb < <(fio_job "$work/mnt" job "$@")
  read -r er eb ew ewb < <(fio_job "$work/ext4" job "$@")
  local fi=$((fr + fw)) fm=$((fb + fwb)) ei=$((er + ew)) em=$((eb + ewb))
  awk -v l="$label" -v fi="$fi" -v fm="$fm" -v ei="$ei" -v em="$em" \
    'BEGIN { printf "%-36s %12d %12d %12d %12d %6.2fx\n", l, fi, fm, ei, em, (ei > 0 ? fi / ei : 0) }'
}
row "psync 4k randread"              --ioengine=psync --rw=randread --bs=4k
row "libaio 4k randread QD32 direct" --ioengine=libaio --rw=randread --bs=4k --iodepth=32 --direct=1
row "libaio 4k randread QD32"        --ioengine=libaio --rw=randread --bs=4k --iodepth=32
row "psync 1m write"                 --ioengine=psync --rw=write --bs=1m
row "psync 1m write direct"          --ioengine=psync --rw=write --bs=1m --direct=1
row "libaio 1m write QD8 direct"     --ioengine=libaio --rw=write --bs=1m --iodepth=8 --direct=1
row "psync 1m read"                  --ioengine=psync --rw=read --bs=1m
row "libaio 1m read QD8 direct"      --ioengine=libaio --rw=read --bs=1m --iodepth=8 --direct=1
$flint umount "$work/mnt"
scripts/appliance.sh stop "$work/node.toml"
