#!/usr/bin/env bash
# Flint's userspace NVMe driver on QEMU's emulated NVMe, over VFIO with a
# vIOMMU, in a Debian 6.1 guest under TCG (scripts/guest/tests/
# nvme-driver.sh): bring-up, random write/read/verify over >= 3 queue
# wraps, an injected read error (QEMU blkdebug) surfacing as an error, a
# reset mid-workload with every command completing, QEMU's pci_nvme_err*
# trace empty; then the driver's 4 KiB random-read IOPS at QD1 and QD31
# beside the guest kernel's nvme driver with fio, same boot.
# FLINT_BENCH_SECS per benchmark job (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p flint-dataplane --example nvme_verify
FLINT_GUEST_BINS="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/nvme_verify" bash scripts/guest/setup.sh >/dev/null
work=$(mktemp -d /var/tmp/flint-nvme.XXXXXX)
trap 'rm -rf "$work"' EXIT
truncate -s 1G "$work/nvme.img"
# A read of this sector (512-byte LBA) fails with EIO inside QEMU.
eio_lba=1900000
cat >"$work/blkdebug.cfg" <<CFG
[inject-error]
event = "read_aio"
errno = "5"
sector = "$eio_lba"
once = "off"
CFG
log=$work/guest.log
timeout 900 scripts/guest/run-qemu.sh --iommu --nvme "blkdebug:$work/blkdebug.cfg:$work/nvme.img" \
  --trace "$work/trace.log" -- test=nvme-driver eio_lba=$eio_lba secs="${FLINT_BENCH_SECS:-5}" >"$log" 2>&1 || true
tr -d '\r' <"$log" >"$log.txt"
grep -E "^(PASS|FAIL|T:|BENCH)" "$log.txt" || true
bad=0
for w in driver-bring-up driver-verify-3-wraps driver-eio-surfaces driver-reset-mid-workload; do
  grep -qx "PASS $w" "$log.txt" || { echo "nvme-guest: $w did not pass"; bad=1; }
done
errs=$(grep -c "pci_nvme_err" "$work/trace.log" 2>/dev/null || true)
# The injected read error (status 0x281, tried 4 times: the driver retries
# a status without DNR 3 times) is the one error QEMU may trace.
other=$(grep "pci_nvme_err" "$work/trace.log" 2>/dev/null | grep -vc "status 0x281" || true)
echo "nvme-guest: QEMU pci_nvme_err* events: ${errs:-0} (${other:-0} besides the injected read error)"
[ "${other:-0}" = 0 ] || { grep pci_nvme_err "$work/trace.log" | head; bad=1; }
awk '/^BENCH/ { v[$2" "$3] = $4 } END {
  split("randread-4k-qd1 randread-4k-qd31", jobs, " ")
  printf "%-22s %12s %12s %8s\n", "job (guest, TCG)", "Flint driver", "kernel nvme", "ratio"
  for (i = 1; i <= 2; i++) { j = jobs[i]; d = v["driver "j]; k = v["kernel "j]
    printf "%-22s %12d %12d %8.2f\n", j, d, k, (k > 0 ? d / k : 0) } }' "$log.txt"
if [ $bad = 1 ]; then tail -40 "$log.txt"; exit 1; fi
echo "nvme-guest: all steps passed"
