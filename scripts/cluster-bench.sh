#!/usr/bin/env bash
# Aggregate rates of clusters of 1, 2, 4 and 6 nodes on this machine
# (FLINT_BENCH_NODES="1 2 4 6"), each started by scripts/cluster.sh with
# its devices and slices on tmpfs (RAM), one etcd member, and measured by
# `flint-bench cluster` with a client per bucket (two buckets per node):
# one node serves its own file system (the baseline, 4 clients); 2 nodes
# have buckets of 1+1, 4 and 6 nodes of 2+1 (each stripe's chunks on
# distinct nodes). Prints each figure, its ratio to one node, and the
# figure per CPU-second of every node process and the client.
# FLINT_BENCH_ARGS passes options to flint-bench cluster (--time, --qd,
# --size-mib).
set -euo pipefail
cd "$(dirname "$0")/.."
export FLINT_CLUSTER_PORT=${FLINT_CLUSTER_PORT:-19900}
base=$FLINT_CLUSTER_PORT
bench=target/release/flint-bench
if [ ! -x target/release/flint ] || [ ! -x "$bench" ]; then
  cargo build --release -p flint-engine --bin flint -p flint-bench
fi
out=$(mktemp -d /dev/shm/flint-cluster-bench.XXXXXX)
dir=""
cleanup() {
  [ -z "$dir" ] || scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
read -r -a extra <<<"${FLINT_BENCH_ARGS:-}"
for n in ${FLINT_BENCH_NODES:-1 2 4 6}; do
  dir="$out/c$n"
  if [ "$n" = 1 ]; then
    scripts/cluster.sh up "$dir" 1 1 >/dev/null
    args=(--targets "127.0.0.1:$((base + 21))" --key-file "$dir/node1/default.key" --clients 4)
  else
    km="2 1"
    [ "$n" -ge 3 ] || km="1 1"
    FLINT_CLUSTER_KM="$km" scripts/cluster.sh up "$dir" "$n" 1 >/dev/null
    args=(--etcd "127.0.0.1:$((base + 1))" --key-file "$dir/cluster.key")
  fi
  pids=$(cat "$dir"/node*.toml.pid | paste -sd,)
  # Buckets open once the first map is out: try until every one is served.
  for try in $(seq 1 60); do
    if $bench cluster "${args[@]}" --pids "$pids" --json "${extra[@]}" >"$out/r$n.json" 2>"$out/err"; then
      break
    fi
    grep -q "not served yet" "$out/err" && [ "$try" -lt 60 ] || {
      cat "$out/err" >&2
      exit 1
    }
    sleep 1
  done
  echo "$n nodes: $(cat "$out/r$n.json")" >&2
  scripts/cluster.sh down "$dir" >/dev/null
  dir=""
done
python3 - "$out" ${FLINT_BENCH_NODES:-1 2 4 6} <<'EOF'
import json, sys
out, ns = sys.argv[1], sys.argv[2:]
r = {n: json.load(open(f"{out}/r{n}.json")) for n in ns}
base = r[ns[0]]
rows = [("1 MiB writes, durable", "seq_write_gbps", "GB/s", 0),
        ("1 MiB reads", "seq_read_gbps", "GB/s", 1),
        ("4 KiB random reads", "rand_read_iops", "IOPS", 2),
        ("4 KiB random writes", "rand_write_iops", "IOPS", 3)]
print(f"cluster: aggregate rates on this machine ({len(r[ns[0]]['cpu_s'])} phases per size), ratios to {ns[0]} node(s)")
print(f"{'nodes':>5}  {'layout':<32} {'what':<22} {'aggregate':>12} {'ratio':>6} {'per CPU-s':>12} {'ratio':>6}")
for n in ns:
    v = r[n]
    for name, key, unit, i in rows:
        fmt = (lambda x: f"{x:.3f} GB") if unit == "GB/s" else (lambda x: f"{x:.0f} ops")
        per = v[key] * v["wall_s"][i] / max(v["cpu_s"][i], 1e-9)
        bper = base[key] * base["wall_s"][i] / max(base["cpu_s"][i], 1e-9)
        agg = f"{v[key]:.3f} GB/s" if unit == "GB/s" else f"{v[key]:.0f} IOPS"
        print(f"{n:>5}  {v['what']:<32} {name:<22} {agg:>12} {v[key] / max(base[key], 1e-12):>5.2f}x {fmt(per):>12} {per / max(bper, 1e-12):>5.2f}x")
EOF
