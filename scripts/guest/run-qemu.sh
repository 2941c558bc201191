#!/usr/bin/env bash
# Boots the guest rig (scripts/guest/setup.sh) under QEMU TCG (KVM is not
# usable here) with 2 vCPUs and QEMU's user network: the guest reaches the
# host's loopback at 10.0.2.2. Extra kernel arguments follow `--`
# (test=NAME runs scripts/guest/tests/NAME.sh).
#   run-qemu.sh [--nvme IMG] -- test=nvmf port=4420 ...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${FLINT_GUEST_DIR:-$HERE/../../target/guest}
extra=() append="console=ttyS0 panic=-1 quiet loglevel=4 net=1"
while [ $# -gt 0 ]; do
  case $1 in
    --nvme) extra+=(-drive "file=$2,if=none,id=nvm,format=raw" -device nvme,serial=flint0,drive=nvm); shift ;;
    --) shift; append+=" $*"; break ;;
    *) echo "run-qemu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
exec qemu-system-x86_64 -accel tcg,thread=multi -cpu max -machine q35 -m 2G -smp 2 \
  -nographic -no-reboot -bios /usr/share/qemu/qboot.rom \
  -kernel "$OUT/kernel/vmlinux" -initrd "$OUT/initrd.gz" -append "$append" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= "${extra[@]}"
