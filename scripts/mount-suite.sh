#!/usr/bin/env bash
# The POSIX mount's conformance and crash suite, on a real FUSE mount of a
# real appliance (release build), with test suites written by others
# (../shared/peer, built here into a scratch directory, never edited):
#   - pjdfstest: every group, but the tests ci/pjdfstest-skip.txt lists with
#     the reason each cannot pass on FUSE;
#   - fsx: 20,000 operations with mmap reads and writes;
#   - fsstress with 2 processes; the fsracer scripts for 20 s;
#   - fsx while the appliance is SIGKILLed and restarted twice: it finishes
#     clean;
#   - the mount daemon SIGKILLed under a writer of unaligned records: every
#     record whose write returned is there after a remount;
#   - two mounts of one file system: what one closed, the other sees whole;
#   - SIGTERM unmounts a foreground mount cleanly.
# Needs root (FUSE mounts) and the packages scripts/setup.sh installs.
#   scripts/mount-suite.sh [--quick]    (--quick: a pjdfstest slice only)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=${1:-}
# The peer suites sit beside the project (../shared/peer); a clone placed
# deeper finds them further up.
peer=${FLINT_PEER:-}
if [ -z "$peer" ]; then
  for cand in "$root/../shared/peer" "$root/../../shared/peer" "$root/../../../shared/peer" /work/shared/peer; do
    if [ -d "$cand/pjdfstest" ]; then peer=$cand; break; fi
  done
fi
if [ ! -d "${peer:-/nonexistent}/pjdfstest" ] || [ ! -d "$peer/secfs" ]; then
  echo "mount-suite: the peer suites (pjdfstest, secfs) are not beside the project (../shared/peer); set FLINT_PEER" >&2
  exit 1
fi
step() { printf '\n-- %s --\n' "$*"; }

work=$(mktemp -d /var/tmp/flint-mount.XXXXXX)
mnt=$work/mnt mnt2=$work/mnt2
mkdir -p "$mnt" "$mnt2"
cleanup() {
  set +e
  for m in "$mnt" "$mnt2" "$work/mnt3" "$work/mnt4" "$work/mnt5" "$work/mnt-wb"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  [ -f "$work/node.toml.pid" ] && kill -9 "$(cat "$work/node.toml.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step "build the peer suites"
cp -r "$peer/pjdfstest" "$peer/secfs" "$work/"
(cd "$work/pjdfstest" && autoreconf -ifs >/dev/null 2>&1 && ./configure -q >/dev/null &&
  make -s pjdfstest >/dev/null 2>&1)
make -s -C "$work/secfs/fstools/src/fsx" >/dev/null 2>&1
make -s -C "$work/secfs/fsstress" >/dev/null 2>&1
fsx=$work/secfs/fstools/src/fsx/fsx
fsstress=$work/secfs/fsstress/fsstress

step "appliance and mount"
cargo build --release -q -p flint-engine --bin flint
flint=$root/target/release/flint
sed -e "s#data/#$work/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17500#' -e 's#127.0.0.1:7480#127.0.0.1:17580#' \
  -e 's#size = "512MiB"#size = "384MiB"#' configs/embedded.toml >"$work/node.toml"
scripts/appliance.sh start "$work/node.toml" --init
cfg="--config $work/node.toml"
$flint $cfg mount /default "$mnt" -o log="$work/mount.log"
df -h "$mnt"
grep -E "kernel FUSE|session threads" "$work/mount.log"

step "fsx: 20,000 operations, mmap reads and writes on"
(cd "$mnt" && "$fsx" -q -N 20000 -S 42 -F 10000000 "$mnt/fsx.out")
rm -f "$mnt"/fsx.out*

step "fsx with the kernel's write-back cache (-o writeback_cache): 5,000 operations"
mkdir -p "$work/mnt-wb"
$flint $cfg mount /default "$work/mnt-wb" -o log="$work/mount-wb.log",writeback_cache
(cd "$work/mnt-wb" && "$fsx" -q -N 5000 -S 9 -F 10000000 "$work/mnt-wb/fsx-wb.out")
rm -f "$work"/mnt-wb/fsx-wb.out*
$flint umount "$work/mnt-wb"

step "fsstress: 2 processes"
mkdir "$mnt/fss"
"$fsstress" -d "$mnt/fss" -n 2000 -p 2 -s 1 -X
rm -rf "$mnt/fss"

step "fsracer: 20 s of racing creates, links, renames and removes"
mkdir "$mnt/race"
(cd "$work/secfs/fsracer" && timeout 60 ./fsracer 20 "$mnt/race" >/dev/null 2>&1) || true
# Whatever the race left must list and remove cleanly.
ls -la "$mnt/race" >/dev/null
rm -rf "$mnt/race"
[ ! -e "$mnt/race" ]

step "two mounts: close-to-open"
$flint $cfg mount /default "$mnt2" -o log="$work/mount2.log"
head -c 3000000 /dev/urandom >"$work/blob"
cp "$work/blob" "$mnt/shared"
cmp "$work/blob" "$mnt2/shared"
head -c 1000000 /dev/urandom >"$work/blob2"
cp "$work/blob2" "$mnt2/shared"
cmp "$work/blob2" "$mnt/shared"
rm "$mnt/shared"
$flint umount "$mnt2"

step "pjdfstest"
skip=$( (grep -v '^#' ci/pjdfstest-skip.txt || true) | awk 'NF {print $1}')
tests=()
if [ "$quick" = "--quick" ]; then
  groups="chmod chown link mkdir open rename rmdir symlink truncate unlink"
  for g in $groups; do tests+=("$work/pjdfstest/tests/$g"); done
else
  for t in "$work"/pjdfstest/tests/*/*.t; do
    rel=${t#"$work/pjdfstest/tests/"}
    if ! grep -qx "$rel" <<<"$skip"; then tests+=("$t"); fi
  done
fi
mkdir "$mnt/pjd"
(cd "$mnt/pjd" && prove -r "${tests[@]}" >"$work/pjd.log" 2>&1) || {
  grep -v '\.\. ok$' "$work/pjd.log" | tail -40
  exit 1
}
tail -3 "$work/pjd.log"
rm -rf "$mnt/pjd"

step "fsx while the appliance is SIGKILLed and restarted twice"
(cd "$mnt" && "$fsx" -q -N 6000 -S 7 -F 10000000 "$mnt/fsx-kill.out") &
fsx_pid=$!
for _ in 1 2; do
  sleep 4
  scripts/appliance.sh kill "$work/node.toml"
  scripts/appliance.sh start "$work/node.toml"
done
wait "$fsx_pid"
rm -f "$mnt"/fsx-kill.out*

step "an absent appliance: calls fail with ETIMEDOUT after -o timeout, then work again"
mkdir -p "$work/mnt5"
$flint $cfg mount /default "$work/mnt5" -o log="$work/mount5.log",timeout=3
scripts/appliance.sh kill "$work/node.toml"
t0=$(date +%s)
if err=$(stat "$work/mnt5/absent-$RANDOM" 2>&1); then
  echo "stat succeeded with the appliance down" >&2
  exit 1
fi
t=$(($(date +%s) - t0))
grep -q "timed out" <<<"$err" || { echo "want ETIMEDOUT, got: $err" >&2; exit 1; }
[ "$t" -le 20 ] || { echo "the call took $t s to fail (timeout=3)" >&2; exit 1; }
echo "failed after ${t} s: $err"
scripts/appliance.sh start "$work/node.toml"
touch "$work/mnt5/back" && rm "$work/mnt5/back"
$flint umount "$work/mnt5"

step "SIGKILL of the mount daemon: every write it acknowledged is there after a remount"
mkdir -p "$work/mnt4"
$flint $cfg mount /default "$work/mnt4" -f >"$work/mount4.log" 2>&1 &
m4=$!
for _ in $(seq 1 100); do mountpoint -q "$work/mnt4" && break; sleep 0.1; done
: >"$work/acked"
(
  i=0
  while :; do
    # 4 KiB records at 4 KiB + 100 B strides: unaligned, neighbours share blocks.
    head -c 4096 < <(yes "record $i ") |
      dd of="$work/mnt4/acked.dat" bs=4096 seek=$((i * 4196)) oflag=seek_bytes conv=notrunc status=none ||
      exit 0
    echo "$i" >>"$work/acked"
    i=$((i + 1))
  done
) &
w=$!
sleep 3
kill -9 "$m4"
wait "$w" 2>/dev/null || true
wait "$m4" 2>/dev/null || true
umount -l "$work/mnt4" 2>/dev/null || true
n=$(wc -l <"$work/acked")
[ "$n" -gt 10 ] || { echo "only $n records were written before the kill" >&2; exit 1; }
$flint $cfg mount /default "$work/mnt4" -o log="$work/mount4b.log"
last=$((n - 1))
for i in $(seq 0 "$last"); do
  want=$(head -c 4096 < <(yes "record $i ") | md5sum)
  got=$(dd if="$work/mnt4/acked.dat" bs=4096 skip=$((i * 4196)) iflag=skip_bytes count=1 status=none | md5sum)
  [ "$want" = "$got" ] || { echo "acknowledged record $i of $n is not there after the kill" >&2; exit 1; }
done
echo "$n acknowledged records, all there"
rm "$work/mnt4/acked.dat"
$flint umount "$work/mnt4"

step "SIGTERM unmounts a foreground mount"
mkdir "$work/mnt3"
$flint $cfg mount /default "$work/mnt3" -f >"$work/mount3.log" 2>&1 &
m3=$!
for _ in $(seq 1 100); do mountpoint -q "$work/mnt3" && break; sleep 0.1; done
mountpoint -q "$work/mnt3"
kill -TERM "$m3"
wait "$m3"
! mountpoint -q "$work/mnt3"

$flint umount "$mnt"
scripts/appliance.sh stop "$work/node.toml"
echo "mount suite passed"
