#!/usr/bin/env bash
# Boots the guest rig (scripts/guest/setup.sh) under QEMU TCG (KVM is not
# usable here) with 2 vCPUs and QEMU's user network: the guest reaches the
# host's loopback at 10.0.2.2. Extra kernel arguments follow `--`
# (test=NAME runs scripts/guest/tests/NAME.sh).
#   run-qemu.sh [--nvme FILE] [--iommu] [--trace FILE] -- test=nvmf port=4420 ...
# --nvme adds an emulated NVMe controller on FILE (a raw image, or
# blkdebug:CFG:IMG to inject errors); --iommu adds a vIOMMU (for VFIO);
# --trace logs QEMU's pci_nvme_err* trace events to FILE.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${FLINT_GUEST_DIR:-$HERE/../../target/guest}
extra=() append="console=ttyS0 panic=-1 quiet loglevel=4 net=1" machine=q35
while [ $# -gt 0 ]; do
  case $1 in
    --nvme) extra+=(-drive "file=$2,if=none,id=nvm,format=raw" -device nvme,serial=flint0,drive=nvm); shift ;;
    --iommu) machine="q35,kernel-irqchip=split"
             extra+=(-device intel-iommu,intremap=on,caching-mode=on); append+=" intel_iommu=on iommu=pt" ;;
    --trace) extra+=(-trace "enable=pci_nvme_err*,file=$2"); shift ;;
    --) shift; append+=" $*"; break ;;
    *) echo "run-qemu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
exec qemu-system-x86_64 -accel tcg,thread=multi -cpu max -machine "$machine" -m 2G -smp 2 \
  -nographic -no-reboot -bios /usr/share/qemu/qboot.rom \
  -kernel "$OUT/kernel/vmlinux" -initrd "$OUT/initrd.gz" -append "$append" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= "${extra[@]}"
