#!/usr/bin/env bash
# The cluster's control plane on one machine, for CI: a 3-member etcd and
# four nodes (scripts/cluster.sh), clients writing to every node throughout
# and logging each acknowledged write, and in turn:
#   1. SIGKILL a node: its shards are on survivors within lease TTL + 1 s;
#      kept down, its buckets' chunks are rebuilt onto the survivors (every
#      stripe back to 2+1 without it); then a second node is killed, and
#      both restart and the map rebalances to within one shard;
#   2. partition a node from etcd for 10 s (nftables drops of its sockets,
#      the node running as its own uid): it acknowledges nothing from its
#      fence (lease TTL after its partition) until it registers again, and
#      counts the requests it held;
#   3. SIGSTOP a node past its lease: its shards move; after SIGCONT it
#      acknowledges nothing until registered again;
#   4. SIGKILL the etcd leader: clients see no error, map changes resume;
#   5. a rolling restart of every node under maintenance: no client error,
#      nothing rebuilt onto the survivors;
#   6. remove a node (its shards drain one at a time, every bucket empties
#      its slot onto the others and vacates it, the node leaves the map)
#      and add it back (it fills the vacancies, rebuilt onto);
# then every acknowledged write is read back from its node and compared.
# Beside the per-node writers, a client of the cluster's buckets (engines
# whose 2+1 stripes put a chunk on each of three nodes) puts files
# throughout: none may fail, whichever node dies, and each reads back.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLINT_CLUSTER_PORT=${FLINT_CLUSTER_PORT:-17900}
export FLINT_CLUSTER_TTL=2
base=$FLINT_CLUSTER_PORT
ttl_ms=2000
buckets=8
flint=target/release/flint
dir=$(mktemp -d /var/tmp/flint-cluster.XXXXXX)
chmod 755 "$dir"
uid=4242
table="flint_cluster_test_$$"

cleanup() {
  nft delete table inet "$table" 2>/dev/null || true
  for p in "$dir"/node*.toml.pid; do
    [ -e "$p" ] && kill -CONT "$(cat "$p")" 2>/dev/null || true
  done
  jobs -p | xargs -r kill 2>/dev/null || true
  scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap "exit 1" INT TERM

now_ms() { date +%s%3N; }
step() { printf '\n-- cluster %s --\n' "$*"; }
st() { $flint --config "$dir/node1.toml" --json cluster status; }
field() { python3 -c "import json,sys; v=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
shards_of() { st | field "[h['shards'] for h in v['hosts'] if h['id']==$1][0]"; }
epoch() { st | field "v['epoch']"; }
wait_for() { # WHAT SECONDS COMMAND...
  local what=$1 secs=$2
  shift 2
  local end=$(($(now_ms) + secs * 1000))
  until "$@"; do
    if [ "$(now_ms)" -gt "$end" ]; then
      echo "cluster-test: $what did not happen within $secs s" >&2
      st >&2 || true
      exit 1
    fi
    sleep 0.05
  done
}
balanced() {
  st | field "(lambda l: int(max(l) - min(l) <= 1 and v['handoffs'] == 0 and all(h['state'] == 'active' for h in v['hosts'])))([h['shards'] for h in v['hosts'] if h['state'] != 'down'])" | grep -qx 1
}
no_shards() { [ "$(shards_of "$1")" = 0 ]; }
# Every bucket whole again: no slice left that missed writes, and every
# bucket open on some node.
whole() {
  [ "$(st | field "v['stale_slots']")" = 0 ] && balanced &&
    [ "$(health 1 2 3 4 | field "len(v)")" = "$buckets" ]
}
epoch_above() { [ "$(epoch)" -gt "$1" ]; }
# NODE left the map: every bucket rebuilt its slot onto the others.
vacated() {
  [ "$(st | field "int(v['vacant_slots'] == $buckets and not [h for h in v['hosts'] if h['id'] == $1 and h['state'] != 'pending'])")" = 1 ]
}
# Every vacancy filled again, and whole.
refilled() { [ "$(st | field "v['vacant_slots']")" = 0 ] && whole; }
# The buckets open on nodes NODES..., as their owners report them.
health() {
  for i in "$@"; do
    curl -sf -m 2 "127.0.0.1:$((base + 50 + i))/v1/cluster" || echo "{}"
    echo
  done |
    python3 -c "import json,sys; print(json.dumps([b for l in sys.stdin if l.strip() for b in json.loads(l).get('buckets', {}).values()]))"
}
# Every bucket open on NODES... and rebuilt: no stripe left on a lost slot.
rebuilt() {
  [ "$(health "$@" | field "int(len(v) == $buckets and all(b['lost'] and b['rebuild'] == 'done' for b in v))")" = 1 ]
}

# A client per node: small files put one after another, each logged as
# "start_ms end_ms rc name" (rc 0: acknowledged).
writer() { # NODE
  local i=$1 n=0
  mkdir -p "$dir/w$i"
  while [ ! -e "$dir/stop-writers" ]; do
    n=$((n + 1))
    head -c $((1000 + RANDOM)) /dev/urandom >"$dir/w$i/f$n"
    local t0 t1 rc=0
    t0=$(now_ms)
    $flint --config "$dir/node$i.toml" put "default/w$i-f$n" "$dir/w$i/f$n" >/dev/null 2>>"$dir/w$i.err" || rc=$?
    t1=$(now_ms)
    echo "$t0 $t1 $rc w$i-f$n" >>"$dir/w$i.log"
  done
}
# A client of the cluster's buckets: files put by name (the bucket its
# name hashes to, wherever the map has it), logged the same way in c.log.
cwriter() {
  local n=0
  mkdir -p "$dir/wc"
  while [ ! -e "$dir/stop-writers" ]; do
    n=$((n + 1))
    head -c $((1000 + RANDOM * 4)) /dev/urandom >"$dir/wc/f$n"
    local t0 t1 rc=0
    t0=$(now_ms)
    $flint --config "$dir/node1.toml" cluster put "default/c-f$n" "$dir/wc/f$n" >/dev/null 2>>"$dir/c.err" || rc=$?
    t1=$(now_ms)
    echo "$t0 $t1 $rc c-f$n" >>"$dir/c.log"
  done
}
errors_between() { # NODE FROM_MS TO_MS: failed writes ending in the window
  awk -v a="$2" -v b="$3" '$2 >= a && $2 <= b && $3 != 0' "$dir/w$1.log" | wc -l
}
acks_between() { # NODE FROM_MS TO_MS: acknowledged writes ending in the window
  awk -v a="$2" -v b="$3" '$2 > a && $2 < b && $3 == 0' "$dir/w$1.log" | wc -l
}

step "up: 3 etcd members, 4 nodes (node 3 runs as uid $uid), 8 buckets of 2+1"
[ -x "$flint" ] || cargo build --release -p flint-engine --bin flint
# Node 3 runs as its own uid so nftables can cut it off.
export FLINT_NODE_UIDS="3:$uid"
scripts/cluster.sh up "$dir" 4 3 >/dev/null
wait_for "balanced on 4 nodes" 20 balanced
$flint --config "$dir/node1.toml" cluster host list
for i in 1 2 3 4; do writer "$i" & done
cwriter &
sleep 2

step "1: SIGKILL node 2"
e0=$(epoch)
t_kill=$(now_ms)
scripts/cluster.sh node "$dir" 2 kill
wait_for "node 2's shards moving" 10 no_shards 2
failover=$(($(now_ms) - t_kill))
echo "node 2's shards on survivors after $failover ms (lease TTL $ttl_ms ms; limit TTL + 1 s)"
[ "$failover" -le $((ttl_ms + 1000)) ] || {
  echo "cluster-test: failover took $failover ms" >&2
  exit 1
}
epoch_above "$e0"

step "1b: node 2 stays down: its buckets' chunks are rebuilt onto the survivors"
t_rb=$(now_ms)
wait_for "every bucket rebuilt without node 2" 120 rebuilt 1 3 4
rebuild_ms=$(($(now_ms) - t_rb))
health 1 3 4 | field "'rebuilt without node 2: %d chunks, %.1f s of steps over %d buckets' % (sum(b['relocated_chunks'] for b in v), sum(b['busy_s'] for b in v), len(v))"
echo "every stripe back to 2+1 without node 2 after $rebuild_ms ms"
# The bucket client's rate while rebuilding, beside the healthy seconds
# before the loss (a CLI process per write: a coarse figure, printed only).
awk -v h0=$((t_kill - 2000)) -v h1="$t_kill" -v r0="$t_rb" -v r1="$(now_ms)" '
  $3 == 0 && $2 >= h0 && $2 < h1 { h++ } $3 == 0 && $2 >= r0 && $2 < r1 { r++ }
  END { if (h > 0 && r1 > r0) printf "bucket writes: %.1f/s healthy, %.1f/s while rebuilding (%.2fx)\n", h / 2, r * 1000 / (r1 - r0), (r * 1000 / (r1 - r0)) / (h / 2) }' "$dir/c.log"

step "1c: a second node lost after the rebuild: SIGKILL node 3, both come back"
scripts/cluster.sh node "$dir" 3 kill
wait_for "node 3's shards moving" 10 no_shards 3
sleep 3
# Their writers fail while they are down; restart them and rebalance.
scripts/cluster.sh node "$dir" 2 start
scripts/cluster.sh node "$dir" 3 start
wait_for "rebalancing and rebuilding after nodes 2 and 3 return" 60 whole

step "2: partition node 3 from etcd for 10 s"
nft add table inet "$table"
nft add chain inet "$table" out '{ type filter hook output priority 0; }'
t_cut=$(now_ms)
nft add rule inet "$table" out meta skuid "$uid" tcp dport "{ $((base + 1)), $((base + 2)), $((base + 3)) }" drop
wait_for "node 3's shards moving" 10 no_shards 3
sleep 8
t_heal=$(now_ms)
nft delete table inet "$table"
wait_for "node 3 back, balanced and rebuilt" 30 whole
late=$(acks_between 3 $((t_cut + ttl_ms)) "$t_heal")
held=$(curl -sf "127.0.0.1:$((base + 53))/v1/cluster" | field "v['fenced_requests']")
echo "node 3: $late writes acknowledged while fenced, $held requests held by the fence"
[ "$late" = 0 ] || {
  echo "cluster-test: node 3 acknowledged $late writes past its fence" >&2
  exit 1
}
[ "$held" -gt 0 ] || {
  echo "cluster-test: node 3's fence held no request (did its writer run?)" >&2
  exit 1
}

step "3: SIGSTOP node 4 past its lease"
pid4=$(cat "$dir/node4.toml.pid")
t_stop=$(now_ms)
kill -STOP "$pid4"
wait_for "node 4's shards moving" 10 no_shards 4
sleep 1
t_cont=$(now_ms)
kill -CONT "$pid4"
wait_for "node 4 back, balanced and rebuilt" 30 whole
t_back=$(now_ms)
# Writes held through the stop may be answered once it registered again;
# none may be answered between its fence and SIGCONT.
late=$(acks_between 4 $((t_stop + ttl_ms)) "$t_cont")
echo "node 4: $late writes acknowledged while stopped past its fence"
[ "$late" = 0 ]

step "4: SIGKILL the etcd leader"
leader=""
for j in 1 2 3; do
  s=$(curl -sf -X POST "http://127.0.0.1:$((base + j))/v3/maintenance/status" -d '{}' || true)
  if [ -n "$s" ] && [ "$(echo "$s" | field "int(v['header']['member_id'] == v['leader'])")" = 1 ]; then
    leader=$j
  fi
done
[ -n "$leader" ] || {
  echo "cluster-test: no etcd leader found" >&2
  exit 1
}
t_leader=$(now_ms)
scripts/cluster.sh etcd "$dir" "$leader" kill
e0=$(epoch)
$flint --config "$dir/node1.toml" cluster maint 1 >/dev/null
wait_for "a map change after the etcd leader's loss" 10 epoch_above "$e0"
$flint --config "$dir/node1.toml" cluster maint 1 --off >/dev/null
sleep 2
scripts/cluster.sh etcd "$dir" "$leader" start
errs=0
for i in 1 2 3 4; do errs=$((errs + $(errors_between "$i" "$t_leader" "$(now_ms)"))); done
echo "etcd member $leader (the leader) killed: $errs client errors"
[ "$errs" = 0 ]

step "5: rolling restart under maintenance"
t_roll=$(now_ms)
# Rebuilds onto survivors logged by the nodes other than NODE.
rebuilds_but() {
  local n=0 j
  for j in 1 2 3 4; do
    [ "$j" = "$1" ] || n=$((n + $(grep -c "rebuilt without slots" "$dir/node$j.toml.log" || true)))
  done
  echo "$n"
}
rebuilt_for_maint=0
for i in 1 2 3 4; do
  r0=$(rebuilds_but "$i")
  $flint --config "$dir/node1.toml" cluster maint "$i" --etcd "127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3)),127.0.0.1:$((base + 1))" >/dev/null
  scripts/cluster.sh node "$dir" "$i" stop
  scripts/cluster.sh node "$dir" "$i" start
  $flint --config "$dir/node2.toml" cluster maint "$i" --off >/dev/null
  wait_for "node $i back, balanced and rebuilt" 30 whole
  rebuilt_for_maint=$((rebuilt_for_maint + $(rebuilds_but "$i") - r0))
done
echo "rolling restart: $rebuilt_for_maint buckets rebuilt onto survivors for a node under maintenance"
[ "$rebuilt_for_maint" = 0 ]
errs=0
for i in 1 2 3 4; do errs=$((errs + $(errors_between "$i" "$t_roll" "$(now_ms)"))); done
echo "rolling restart: $errs client errors"
[ "$errs" = 0 ]

step "6: remove node 4 (its shards hand off, its slices are emptied), add it back"
t_drain=$(now_ms)
$flint --config "$dir/node1.toml" cluster remove 4 >/dev/null
wait_for "node 4 drained" 20 no_shards 4
wait_for "node 4's slots vacated in every bucket" 60 vacated 4
$flint --config "$dir/node1.toml" cluster host list
$flint --config "$dir/node1.toml" cluster add 4 >/dev/null
wait_for "node 4 rejoined, holding slots again, balanced and rebuilt" 60 refilled
$flint --config "$dir/node1.toml" cluster host list

step "every acknowledged write reads back"
touch "$dir/stop-writers"
wait $(jobs -p | tr '\n' ' ') 2>/dev/null || true
total=0
for i in 1 2 3 4; do
  while read -r _ _ rc name; do
    [ "$rc" = 0 ] || continue
    $flint --config "$dir/node$i.toml" get "default/$name" "$dir/back" >/dev/null
    cmp -s "$dir/back" "$dir/w$i/${name#w"$i"-}" || {
      echo "cluster-test: $name (node $i) reads back wrong" >&2
      exit 1
    }
    total=$((total + 1))
  done <"$dir/w$i.log"
done
# The cluster's writes: none failed (each rode through every fault), and
# each reads back from whichever node serves its bucket now.
cfail=$(awk '$3 != 0' "$dir/c.log" | wc -l)
cstall=$(awk 'BEGIN { m = 0 } { d = $2 - $1; if (d > m) m = d } END { print m }' "$dir/c.log")
ctotal=0
while read -r _ _ rc name; do
  [ "$rc" = 0 ] || continue
  $flint --config "$dir/node2.toml" cluster get "default/$name" "$dir/back" >/dev/null
  cmp -s "$dir/back" "$dir/wc/${name#c-}" || {
    echo "cluster-test: $name (a bucket) reads back wrong" >&2
    exit 1
  }
  ctotal=$((ctotal + 1))
done <"$dir/c.log"
echo "buckets: $ctotal acknowledged writes verified, $cfail failed, longest write $cstall ms"
longest() { awk -v a="$1" -v b="$2" 'BEGIN { m = 0 } $2 >= a && $1 <= b { d = $2 - $1; if (d > m) m = d } END { print m }' "$dir/c.log"; }
echo "longest bucket write per step: SIGKILL $(longest "$t_kill" "$t_cut") ms, partition $(longest "$t_cut" "$t_stop") ms, SIGSTOP $(longest "$t_stop" "$t_leader") ms, etcd leader $(longest "$t_leader" "$t_roll") ms, rolling restart $(longest "$t_roll" "$t_drain") ms, drain $(longest "$t_drain" "$(now_ms)") ms"
[ "$cfail" = 0 ] || {
  echo "cluster-test: $cfail bucket writes failed:" >&2
  tail -5 "$dir/c.err" >&2
  exit 1
}
$flint --config "$dir/node1.toml" cluster status
echo "cluster-test: $total acknowledged node writes and $ctotal bucket writes verified; failover $failover ms (TTL $ttl_ms ms); longest bucket write $cstall ms"
# Stop every node and etcd member before their directory goes.
trap - EXIT
cleanup
rm -rf "$dir"
