#!/usr/bin/env bash
# flint-bench's NVMe/TCP figures: in one QEMU guest (TCG, 2 vCPUs), Flint's
# NVMe/TCP target (flint serve on RAM devices, 2+1, no reduction) beside
# the guest kernel's nvmet-tcp target (a file on tmpfs), both over the
# guest's loopback, driven by the kernel initiator with fio. Prints a
# table with Flint / kernel ratios. FLINT_BENCH_SECS per job (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p flint-engine --bin flint
FLINT_GUEST_BINS="$PWD/target/release/flint" bash scripts/guest/setup.sh >/dev/null
log=$(mktemp /var/tmp/flint-bench-nvmf.XXXXXX)
echo "bench-nvmf: guest console in $log"
trap '[ -n "${FLINT_KEEP_LOG:-}" ] || rm -f "$log"' EXIT
timeout 900 scripts/guest/run-qemu.sh -- test=nvmf-bench secs="${FLINT_BENCH_SECS:-8}" >"$log" 2>&1 || true
tr -d '\r' <"$log" | awk '
  /^BENCH/ { v[$2" "$3] = $4; bw[$2" "$3] = $5; if (!($2 in seen)) { seen[$2]; order[n++] = $2 } }
  /^FAIL/ { print; bad = 1 }
  END {
    printf "%-20s %12s %10s %12s %10s %8s\n", "job (guest, TCG)", "flint IOPS", "MiB/s", "kernel IOPS", "MiB/s", "ratio"
    for (i = 0; i < n; i++) {
      j = order[i]; f = v[j" flint"]; k = v[j" kernel"]
      printf "%-20s %12d %10.1f %12d %10.1f %8.2f\n", j, f, bw[j" flint"], k, bw[j" kernel"], (k > 0 ? f / k : 0)
    }
    if (n == 0 || bad) exit 1
  }'
