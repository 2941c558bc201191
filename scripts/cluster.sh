#!/usr/bin/env bash
# A Flint cluster on one machine: etcd and N nodes as processes on loopback,
# each node on file-backed devices of its own.
#   scripts/cluster.sh up DIR [NODES] [ETCD_MEMBERS]   start etcd (1 or 3 members) and
#                                                      NODES nodes (default 3), create
#                                                      the cluster, wait for its first map
#   scripts/cluster.sh down DIR                        stop the nodes (SIGTERM) and etcd
#   scripts/cluster.sh node DIR I start|stop|kill      one node (scripts/appliance.sh)
#   scripts/cluster.sh etcd DIR I start|kill           one etcd member
# Ports: FLINT_CLUSTER_PORT (default 17900) + 1..3 for etcd clients, + 11..13
# for etcd peers, + 20 + I for node I's data (UDP), + 50 + I for its management API.
# Node I's config is DIR/nodeI.toml; `flint --config DIR/node1.toml cluster status`.
# With 3 nodes or more the cluster has buckets (2+1 stripes, a slice on
# every node): `flint --config DIR/node1.toml cluster put default/NAME FILE`.
# FLINT_CLUSTER_KM="K M" sets the buckets' stripes instead (any node count
# of at least K+M), FLINT_CLUSTER_BUCKETS their number (default 2 per node).
# FLINT_NODE_UIDS="3:4242 ..." runs node 3 as uid 4242 (tests partition it).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${FLINT_CLUSTER_PORT:-17900}
ttl=${FLINT_CLUSTER_TTL:-2}
flint=target/release/flint

etcd_members() { cat "$1/etcd.members" 2>/dev/null || echo 1; }

etcd_start() { # DIR I
  local dir=$1 i=$2 n cluster=""
  n=$(etcd_members "$dir")
  for j in $(seq 1 "$n"); do
    cluster+="${cluster:+,}e$j=http://127.0.0.1:$((base + 10 + j))"
  done
  local state=new
  [ -d "$dir/etcd$i" ] && state=existing
  # Fast elections for tests (1 s leases need them): heartbeat 10 ms.
  etcd --name "e$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" \
    --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" \
    --heartbeat-interval 10 --election-timeout 100 \
    >"$dir/etcd$i.log" 2>&1 &
  echo $! >"$dir/etcd$i.pid"
}

etcd_wait() { # DIR
  local dir=$1 n
  n=$(etcd_members "$dir")
  for _ in $(seq 1 100); do
    if curl -sf -X POST "http://127.0.0.1:$((base + 1))/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 ||
      { [ "$n" -gt 1 ] && curl -sf -X POST "http://127.0.0.1:$((base + 2))/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1; }; then
      return 0
    fi
    sleep 0.1
  done
  echo "etcd did not answer within 10 s:" >&2
  cat "$dir"/etcd*.log >&2
  return 1
}

node_config() { # DIR I
  local dir=$1 i=$2 port=$((base + 20 + $2)) mport=$((base + 50 + $2)) n endpoints=""
  n=$(etcd_members "$dir")
  for j in $(seq 1 "$n"); do endpoints+="${endpoints:+, }\"127.0.0.1:$((base + j))\""; done
  mkdir -p "$dir/node$i"
  sed -e "s#data/#$dir/node$i/#" -e "s#127.0.0.1:7400#127.0.0.1:$port#" \
    -e "s#127.0.0.1:7480#127.0.0.1:$mport#" -e 's#size = "512MiB"#size = "128MiB"#' \
    configs/embedded.toml >"$dir/node$i.toml"
  cat >>"$dir/node$i.toml" <<EOF

[cluster]
etcd = [$endpoints]
name = "flint"
node = $i
lease_ttl = $ttl
slice_dir = "$dir/node$i/slices"
slice_size = "256MiB"
key_file = "$dir/cluster.key"
EOF
}

uid_of() { # I: the uid node I runs as (empty: ours)
  local pair
  for pair in ${FLINT_NODE_UIDS:-}; do
    [ "${pair%%:*}" = "$1" ] && echo "${pair#*:}" && return
  done
  echo ""
}

node_start() { # DIR I [serve flags]
  local dir=$1 i=$2 uid
  shift 2
  uid=$(uid_of "$i")
  [ -n "$uid" ] && chown -R "$uid:$uid" "$dir/node$i"
  FLINT_AS_UID=$uid scripts/appliance.sh start "$dir/node$i.toml" "$@"
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || {
  sed -n '2,15p' "$0" >&2
  exit 2
}
case "$cmd" in
up)
  nodes=${3:-3} members=${4:-1}
  [ -x "$flint" ] || cargo build --release -p flint-engine --bin flint
  command -v etcd >/dev/null || {
    echo "etcd is not installed: run scripts/setup.sh (it installs etcd-server)" >&2
    exit 1
  }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if curl -s -o /dev/null "http://127.0.0.1:$((base + 1))/version"; then
    echo "port $((base + 1)) already answers (another cluster?): stop it or set FLINT_CLUSTER_PORT" >&2
    exit 1
  fi
  echo "$members" >"$dir/etcd.members"
  echo "$nodes" >"$dir/nodes"
  chmod 755 "$dir"
  # The cluster's key, the same file for every node (readable by the uids
  # nodes run as here; a real deployment keeps it 0600 for the service).
  [ -e "$dir/cluster.key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cluster.key"
  chmod 644 "$dir/cluster.key"
  for i in $(seq 1 "$members"); do etcd_start "$dir" "$i"; done
  etcd_wait "$dir"
  for i in $(seq 1 "$nodes"); do
    node_config "$dir" "$i"
    node_start "$dir" "$i" --init
  done
  km=${FLINT_CLUSTER_KM:-}
  [ -n "$km" ] || [ "$nodes" -lt 3 ] || km="2 1"
  if [ -n "$km" ]; then
    read -r k m <<<"$km"
    $flint --config "$dir/node1.toml" cluster create --shards "${FLINT_CLUSTER_BUCKETS:-$((2 * nodes))}" --k "$k" --m "$m"
  else
    $flint --config "$dir/node1.toml" cluster create --shards $((8 * nodes))
  fi
  for _ in $(seq 1 100); do
    if $flint --config "$dir/node1.toml" --json cluster status | grep -q '"epoch": [1-9]'; then
      $flint --config "$dir/node1.toml" cluster status
      $flint --config "$dir/node1.toml" cluster host list
      exit 0
    fi
    sleep 0.1
  done
  echo "the cluster wrote no map within 10 s" >&2
  exit 1
  ;;
down)
  dir=$(cd "$dir" && pwd)
  for cfg in "$dir"/node*.toml; do
    [ -e "$cfg.pid" ] && kill -0 "$(cat "$cfg.pid")" 2>/dev/null && scripts/appliance.sh stop "$cfg"
  done
  for pid in "$dir"/etcd*.pid; do
    [ -e "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    while kill -0 "$(cat "$pid")" 2>/dev/null; do sleep 0.05; done
    rm -f "$pid"
  done
  ;;
node)
  i=$3 what=$4
  dir=$(cd "$dir" && pwd)
  shift 4
  if [ "$what" = start ]; then
    node_start "$dir" "$i" "$@"
  else
    scripts/appliance.sh "$what" "$dir/node$i.toml" "$@"
  fi
  ;;
etcd)
  i=$3 what=$4
  dir=$(cd "$dir" && pwd)
  case "$what" in
  start) etcd_start "$dir" "$i" ;;
  kill)
    kill -KILL "$(cat "$dir/etcd$i.pid")"
    while kill -0 "$(cat "$dir/etcd$i.pid")" 2>/dev/null; do sleep 0.05; done
    ;;
  *) echo "etcd start|kill" >&2 && exit 2 ;;
  esac
  ;;
*)
  sed -n '2,15p' "$0" >&2
  exit 2
  ;;
esac
