#!/usr/bin/env bash
# Snapshots end to end, on a real appliance (release build) and a real FUSE
# mount: `flint fs snapshot create|list|delete|restore`, the hidden
# `.snapshots` directory (not listed, `cd` works, EROFS on every change),
# exact reclaimable bytes, a snapshot that survives SIGKILLs of the
# appliance while the mount stays up, restore with --keep-current, and
# deletion giving the space back; a writable snapshot mounted as a file
# system of its own, diverging from its origin.
# Needs root (FUSE) and the packages scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n-- %s --\n' "$*"; }
fail() {
  echo "snapshot-suite: $*" >&2
  exit 1
}

work=$(mktemp -d /var/tmp/flint-snap.XXXXXX)
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
sed -e "s#data/#$work/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17700#' -e 's#127.0.0.1:7480#127.0.0.1:17780#' \
  -e 's#size = "512MiB"#size = "256MiB"#' configs/embedded.toml >"$work/node.toml"
cfg="--config $work/node.toml"
scripts/appliance.sh start "$work/node.toml" --init
$flint $cfg mount /default "$mnt" -o log="$work/mount.log"

step "a dataset, then a snapshot of it"
mkdir -p "$mnt/train/shard0" "$mnt/train/shard1"
for i in $(seq 1 200); do
  head -c $((1000 + i * 37)) /dev/urandom >"$mnt/train/shard$((i % 2))/img$i.bin"
done
head -c $((8 << 20)) /dev/urandom >"$mnt/model.ckpt"
ln -s model.ckpt "$mnt/latest"
python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.epoch", b"7")' "$mnt/model.ckpt"
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/before.sum"
$flint $cfg fs snapshot create default snap-before-training
$flint $cfg fs snapshot list default

step ".snapshots: hidden, reachable, the state it was taken in"
ls -a "$mnt" | grep -qx '.snapshots' && fail ".snapshots is listed by readdir"
[ -d "$mnt/.snapshots" ] || fail "cd .snapshots does not work"
ls "$mnt/.snapshots" | grep -qx snap-before-training || fail "the snapshot is not in .snapshots"
snap=$mnt/.snapshots/snap-before-training
(cd "$snap" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | diff - "$work/before.sum" ||
  fail "the snapshot's files differ from what was there"
[ "$(readlink "$snap/latest")" = model.ckpt ] || fail "the snapshot's symlink"
[ "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.epoch").decode())' "$snap/model.ckpt")" = 7 ] ||
  fail "the snapshot's xattr"

step "a training run changes the live files"
head -c $((4 << 20)) /dev/urandom | dd of="$mnt/model.ckpt" bs=1M conv=notrunc status=none
rm "$mnt/train/shard0/img10.bin"
echo new >"$mnt/train/new.txt"
sync
cmp -s "$mnt/model.ckpt" "$snap/model.ckpt" && fail "the snapshot changed with the live file"
[ -f "$snap/train/shard0/img10.bin" ] || fail "a file unlinked since is gone from the snapshot"
[ ! -e "$snap/train/new.txt" ] || fail "a file made since is in the snapshot"
recl=$($flint $cfg --json fs snapshot list default | python3 -c \
  'import json,sys; print(json.load(sys.stdin)[0]["reclaimable"])')
want=$(((4 << 20) + ($(stat -c %s "$snap/train/shard0/img10.bin") + 4095) / 4096 * 4096))
echo "reclaimable $recl, overwritten and unlinked $want"
[ "$recl" -eq "$want" ] || fail "reclaimable $recl, expected $want"

step "the snapshot is read-only"
for try in "touch $snap/x" "mkdir $snap/d" "rm $snap/latest" "mv $snap/model.ckpt $snap/m2" \
  "truncate -s 0 $snap/model.ckpt" "chmod 600 $snap/model.ckpt" \
  "python3 -c 'import os; os.setxattr(\"$snap/model.ckpt\", \"user.x\", b\"1\")'" \
  "mkdir $mnt/.snapshots/other"; do
  if out=$(sh -c "$try" 2>&1); then fail "'$try' succeeded"; fi
  case "$out" in *"Read-only file system"*) ;; *) fail "'$try': $out (not EROFS)" ;; esac
done
if (echo x >>"$snap/model.ckpt") 2>/dev/null; then fail "appending to a snapshot's file succeeded"; fi

step "SIGKILL the appliance twice: the snapshot and the mount ride through"
for _ in 1 2; do
  scripts/appliance.sh kill "$work/node.toml"
  scripts/appliance.sh start "$work/node.toml"
done
(cd "$snap" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | diff - "$work/before.sum" ||
  fail "the snapshot's files differ after the restarts"

step "copy one file back out of the snapshot"
cp "$snap/train/shard0/img10.bin" "$mnt/train/shard0/img10.bin"
cmp "$snap/train/shard0/img10.bin" "$mnt/train/shard0/img10.bin"

step "restore the whole file system, keeping its current state as a snapshot"
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/after.sum"
$flint umount "$mnt"
$flint $cfg fs snapshot restore default snap-before-training --keep-current after-training
$flint $cfg mount /default "$mnt" -o log="$work/mount.log"
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | diff - "$work/before.sum" ||
  fail "the restored file system differs from the snapshot"
(cd "$mnt/.snapshots/after-training" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
  diff - "$work/after.sum" || fail "the kept state differs from what was there"
$flint $cfg fs snapshot list default
recl=$($flint $cfg --json fs snapshot list default | python3 -c \
  'import json,sys; print(json.load(sys.stdin)[0]["reclaimable"])')
[ "$recl" -eq 0 ] || fail "the restored snapshot's blocks are live again, yet $recl reclaimable"

step "a writable snapshot: a file system of its own that diverges"
$flint $cfg fs snapshot create default exp --writable
$flint $cfg fs snapshot list default | grep -E "exp .*writable \(default@exp\)" || fail "list shows no writable snapshot"
$flint $cfg fs list | grep -q "default@exp" || fail "fs list shows no clone"
clone=$work/clone
mkdir -p "$clone"
$flint $cfg mount /default@exp "$clone" -o log="$work/clone.log"
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/live.sum"
(cd "$clone" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | diff - "$work/live.sum" ||
  fail "the writable snapshot's files differ from the live ones"
echo changed >"$clone/model.ckpt"
rm "$clone/latest"
mkdir "$clone/exp-out"
sync
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | diff - "$work/live.sum" ||
  fail "writing the clone changed the origin"
[ -L "$mnt/latest" ] || fail "removing the clone's symlink removed the origin's"
[ "$(cat "$clone/model.ckpt")" = changed ] || fail "the clone did not keep its write"
[ "$(cat "$mnt/.snapshots/exp/model.ckpt")" = changed ] || fail ".snapshots/exp is not the writable snapshot"
echo via-snapshots >"$mnt/.snapshots/exp/exp-out/note" || fail "writing in .snapshots/exp (writable) failed"
[ "$(cat "$clone/exp-out/note")" = via-snapshots ] || fail "a write in .snapshots/exp is not in default@exp"
[ ! -e "$mnt/exp-out" ] || fail "a write in the writable snapshot reached the origin"
$flint umount "$clone"
if $flint $cfg fs snapshot restore default exp 2>/dev/null; then fail "restored from a writable snapshot"; fi
$flint $cfg fs snapshot delete default exp
$flint $cfg fs list | grep -q "default@exp" && fail "the clone's file system outlived its deletion"

step "deleting the snapshots gives their space back"
$flint $cfg fs snapshot delete default snap-before-training
$flint $cfg fs snapshot delete default after-training
[ -z "$(ls "$mnt/.snapshots")" ] || fail ".snapshots still lists a deleted snapshot"
$flint $cfg --json fs snapshot list default | grep -qx '\[\]' || fail "snapshots left"
$flint $cfg events | grep -E "snapshot_(created|deleted|restored)" | tail -5

$flint umount "$mnt"
scripts/appliance.sh stop "$work/node.toml"
echo "snapshot-suite: ok"
