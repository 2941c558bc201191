#!/usr/bin/env bash
# NVMe/TCP end to end: a Flint appliance on the host exports a 256 MiB
# volume over NVMe/TCP; a Debian 6.1 guest under QEMU (TCG) runs the Linux
# kernel's initiator against it (scripts/guest/tests/nvmf.sh): discovery,
# connect, fio verify, digests, discard, mkfs.ext4 and remounts, and a
# SIGKILL + restart of the appliance while the guest has it mounted.
# Prints the guest's PASS/FAIL lines; exits non-zero on any FAIL or if a
# step is missing. Needs root (apt) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${FLINT_NVMF_PORT:-17420}
nqn=nqn.2026-12.io.flint:guest
hostid=5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b
hostnqn=nqn.2014-08.org.nvmexpress:uuid:$hostid
work=$(mktemp -d /var/tmp/flint-nvmf.XXXXXX)
cleanup() {
  set +e
  [ -n "${qemu:-}" ] && kill "$qemu" 2>/dev/null
  [ -f "$work/node.toml.pid" ] && kill -9 "$(cat "$work/node.toml.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/guest/setup.sh >/dev/null
cargo build --release -q -p flint-engine --bin flint
sed -e "s#data/#$work/data/#" -e 's#127.0.0.1:7400#127.0.0.1:17430#' -e 's#127.0.0.1:7480#127.0.0.1:17490#' \
  -e 's#size = "512MiB"#size = "256MiB"#' configs/embedded.toml >"$work/node.toml"
cat >>"$work/node.toml" <<TOML

[nvmf]
listen = "127.0.0.1:$port"

[[nvmf.subsystem]]
nqn = "$nqn"
hosts = ["$hostnqn"]

[[nvmf.subsystem.namespace]]
filesystem = "default"
file = "guest0"
size = "256MiB"
block_size = 4096
TOML
scripts/appliance.sh start "$work/node.toml" --init
grep -q "NVMe/TCP target on" "$work/node.toml.log" || { cat "$work/node.toml.log"; exit 1; }

log=$work/guest.log
scripts/guest/run-qemu.sh -- test=nvmf port="$port" nqn="$nqn" hostnqn="$hostnqn" hostid="$hostid" >"$log" 2>&1 &
qemu=$!
restarted=0
while kill -0 "$qemu" 2>/dev/null; do
  if [ $restarted = 0 ] && grep -q "GUEST: RESTART-TARGET" "$log"; then
    scripts/appliance.sh kill "$work/node.toml"
    echo "nvmf-guest: appliance SIGKILLed with the volume mounted in the guest; restarting"
    scripts/appliance.sh start "$work/node.toml"
    restarted=1
  fi
  sleep 0.2
done
wait "$qemu" || true
qemu=
# The serial console ends lines with CR LF.
tr -d '\r' <"$log" >"$log.txt" && mv "$log.txt" "$log"
grep -E "^(PASS|FAIL|T:|GUEST:)" "$log" || true
want="discover connect fio-randwrite-verify-4k fio-seqwrite-verify-128k connect-with-digests
      discard-reads-zeros mkfs.ext4 ext4-remount reads-across-target-restart
      writes-after-restart-and-fsck remount-after-restart dmesg-no-io-errors"
bad=0
# The target's counters in /metrics (since the restart).
metrics=$( (exec 3<>/dev/tcp/127.0.0.1/17490 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) || true)
echo "$metrics" | grep -E '^flint_nvmf_(commands|connections|errors|write_bytes)_total' || true
echo "$metrics" | grep -qE '^flint_nvmf_commands_total [1-9]' || { echo "nvmf-guest: /metrics has no NVMe/TCP commands"; bad=1; }
for w in $want; do
  grep -qx "PASS $w" "$log" || { echo "nvmf-guest: $w did not pass"; bad=1; }
done
if [ $bad = 1 ]; then
  echo "--- guest console"; tail -60 "$log"
  echo "--- appliance log"; tail -20 "$work/node.toml.log"
  exit 1
fi
echo "nvmf-guest: all $(echo $want | wc -w) steps passed"
