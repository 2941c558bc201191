#!/usr/bin/env bash
# Directory quotas and filesystem groups end to end, on a real appliance
# (release build) and a real FUSE mount: `flint fs quota set|list|unset`
# on a populated directory (counted in the background, then enforced),
# EDQUOT past the hard limit, `df` inside the directory showing the quota,
# EXDEV for renames across its boundary, a nested quota bound by its
# parent, a soft limit whose grace runs out, counts kept across SIGKILLs
# of the appliance, Prometheus gauges and events; then `flint fs group`.
# Needs root (FUSE) and the packages scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n-- %s --\n' "$*"; }
fail() {
  echo "quota-suite: $*" >&2
  exit 1
}

work=$(mktemp -d /var/tmp/flint-quota.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  set +e
  mountpoint -q "$mnt" && umount -l "$mnt"
  [ -f "$work/node.toml.pid" ] && kill -9 "$(cat "$work/node.toml.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p flint-engine --bin flint
flint=$PWD/target/release/flint
sed -e "s#data/#$work/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17800#' -e 's#127.0.0.1:7480#127.0.0.1:17880#' \
  -e 's#size = "512MiB"#size = "256MiB"#' configs/embedded.toml >"$work/node.toml"
cfg="--config $work/node.toml"
scripts/appliance.sh start "$work/node.toml" --init
$flint $cfg mount /default "$mnt" -o log="$work/mount.log"

# The quota on PATH's field KEY, from `quota list --json`.
q() {
  $flint $cfg --json fs quota list default | python3 -c '
import json, sys
for q in json.load(sys.stdin):
    if q["path"] == sys.argv[1]:
        print(q[sys.argv[2]])
        break
else:
    print("none")' "$1" "$2"
}
until_state() {
  for _ in $(seq 1 100); do
    [ "$(q "$1" state)" = "$2" ] && return 0
    sleep 0.1
  done
  fail "quota on $1 never became $2 (is $(q "$1" state))"
}
# Errno of renaming $1 to $2 (0: it worked).
rename_errno() {
  python3 -c '
import os, sys
try:
    os.rename(sys.argv[1], sys.argv[2]); print(0)
except OSError as e:
    print(e.errno)' "$1" "$2"
}

step "a populated directory gets a quota: counted, then enforced"
mkdir -p "$mnt/projects/team-a/data" "$mnt/projects/team-b" "$mnt/scratch"
total=0
for i in $(seq 1 120); do
  n=$((3000 + i * 101))
  head -c $n /dev/urandom >"$mnt/projects/team-a/data/f$i"
  total=$((total + n))
done
head -c 100000 /dev/urandom >"$mnt/scratch/big"
$flint $cfg fs quota set default /projects/team-a --hard 8MiB
until_state /projects/team-a enforcing
$flint $cfg fs quota list default
[ "$(q /projects/team-a used)" -eq "$total" ] || fail "used $(q /projects/team-a used), files hold $total"

step "df inside the directory shows the quota, outside the file system"
size=$(df -B1 --output=size "$mnt/projects/team-a/data" | tail -1 | tr -d ' ')
[ "$size" -eq $((8 << 20)) ] || fail "df in the quota shows $size bytes, not 8 MiB"
used=$(df -B1 --output=used "$mnt/projects/team-a" | tail -1 | tr -d ' ')
[ "$used" -eq $(((total + 4095) / 4096 * 4096)) ] || [ "$used" -eq $((total / 4096 * 4096)) ] ||
  fail "df used $used, quota used $total"
fsize=$(df -B1 --output=size "$mnt/scratch" | tail -1 | tr -d ' ')
[ "$fsize" -eq $((4 << 30)) ] || fail "df outside the quota shows $fsize, not the 4 GiB file system"

step "past the hard limit: EDQUOT, and nothing else lost"
room=$(((8 << 20) - total))
if out=$(head -c $((room + 8192)) /dev/urandom | dd of="$mnt/projects/team-a/ckpt" bs=64k \
  conv=fsync status=none 2>&1); then
  fail "writing past the hard limit succeeded"
fi
case "$out" in *"Disk quota exceeded"*) ;; *) fail "past the limit: $out (not EDQUOT)" ;; esac
got=$(stat -c %s "$mnt/projects/team-a/ckpt")
[ "$got" -le "$room" ] || fail "the file grew to $got, past the $room bytes left"
[ "$(q /projects/team-a used)" -eq $((total + got)) ] || fail "use after the refusal"
rm "$mnt/projects/team-a/ckpt"
head -c 4096 /dev/urandom >"$mnt/projects/team-a/small" || fail "a write within the limit failed"

step "renames across the boundary are EXDEV; inside it they work"
[ "$(rename_errno "$mnt/scratch/big" "$mnt/projects/team-a/big")" = 18 ] || fail "rename into the quota"
[ "$(rename_errno "$mnt/projects/team-a/small" "$mnt/small")" = 18 ] || fail "rename out of the quota"
[ "$(rename_errno "$mnt/projects/team-a/small" "$mnt/projects/team-a/data/small")" = 0 ] ||
  fail "rename inside the quota"
mv "$mnt/scratch/big" "$mnt/projects/team-a/big" # mv copies across it
[ "$(q /projects/team-a used)" -eq $((total + 4096 + 100000)) ] || fail "use after mv copied in"

step "a nested quota is bound by its parent too"
mkdir "$mnt/projects/team-a/exp"
$flint $cfg fs quota set default /projects/team-a/exp --hard 100MiB
until_state /projects/team-a/exp enforcing
if head -c $((8 << 20)) /dev/urandom >"$mnt/projects/team-a/exp/run" 2>/dev/null; then
  fail "the nested quota let the parent's limit pass"
fi
[ "$(q /projects/team-a used)" -le $((8 << 20)) ] || fail "the parent is over its hard limit"
rm "$mnt/projects/team-a/exp/run"

step "a soft limit: an event, then writes refused once the grace is over"
$flint $cfg fs quota set default /projects/team-b --soft 1MiB --grace 2s
until_state /projects/team-b enforcing
head -c $((2 << 20)) /dev/urandom >"$mnt/projects/team-b/over" || fail "over the soft limit within grace"
sleep 4
if head -c 4096 /dev/urandom >>"$mnt/projects/team-b/over" 2>/dev/null; then
  fail "a write after the grace succeeded"
fi
$flint $cfg events | grep -q quota_soft_exceeded || fail "no soft-limit event"
$flint $cfg events | grep -q quota_grace_expired || fail "no grace-expired event"
rm "$mnt/projects/team-b/over"
sleep 2
head -c 4096 /dev/urandom >"$mnt/projects/team-b/ok" || fail "writes stay refused once under"

step "SIGKILL the appliance twice: every count is the same after"
before=$($flint $cfg --json fs quota list default | python3 -c \
  'import json,sys; print(sorted((q["path"], q["used"]) for q in json.load(sys.stdin)))')
for _ in 1 2; do
  scripts/appliance.sh kill "$work/node.toml"
  scripts/appliance.sh start "$work/node.toml"
done
after=$($flint $cfg --json fs quota list default | python3 -c \
  'import json,sys; print(sorted((q["path"], q["used"]) for q in json.load(sys.stdin)))')
[ "$before" = "$after" ] || fail "counts after the restarts: $after, before: $before"

step "gauges, status"
$flint $cfg fs snapshot create default s1
metrics=$(curl -s http://127.0.0.1:17880/metrics)
echo "$metrics" | grep -q 'flint_quota_used_bytes{fs="default",path="/projects/team-a"}' ||
  fail "no quota gauge"
echo "$metrics" | grep -q 'flint_quota_hard_bytes{fs="default",path="/projects/team-a"} 8388608' ||
  fail "no hard-limit gauge"
echo "$metrics" | grep -q 'flint_snapshot_reclaimable_bytes{fs="default",snapshot="s1"}' ||
  fail "no snapshot gauge"
$flint $cfg status | grep -q "quotas 3" || fail "status does not show the quotas"
$flint $cfg fs snapshot delete default s1

step "unset: the directory is limited no more"
$flint $cfg fs quota unset default /projects/team-a/exp
for _ in $(seq 1 100); do [ "$(q /projects/team-a/exp state)" = none ] && break; sleep 0.1; done
[ "$(q /projects/team-a/exp state)" = none ] || fail "the unset quota is still listed"
$flint $cfg fs quota unset default /projects/team-a
for _ in $(seq 1 100); do [ "$(q /projects/team-a state)" = none ] && break; sleep 0.1; done
head -c $((10 << 20)) /dev/urandom >"$mnt/projects/team-a/free" || fail "a write after unset failed"
fsize=$(df -B1 --output=size "$mnt/projects/team-a" | tail -1 | tr -d ' ')
[ "$fsize" -eq $((4 << 30)) ] || fail "df after unset shows $fsize"

step "filesystem groups"
$flint $cfg fs group create ai-training --org default
$flint $cfg fs group assign default ai-training
$flint $cfg fs group list | grep -E "ai-training +default +default" || fail "group list"
$flint $cfg fs list | grep -q ai-training || fail "fs list does not show the group"
curl -s http://127.0.0.1:17880/metrics | grep -q 'flint_group_filesystems{group="ai-training"} 1' ||
  fail "no group gauge"
if $flint $cfg fs group delete ai-training 2>/dev/null; then fail "deleted a group holding a file system"; fi
$flint $cfg fs group assign default --none
$flint $cfg fs group delete ai-training
$flint $cfg events | grep -E "quota_|group_" | tail -8

$flint umount "$mnt"
scripts/appliance.sh stop "$work/node.toml"
echo "quota-suite: ok"
