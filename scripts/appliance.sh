#!/usr/bin/env bash
# Starts and stops a Flint appliance for scripts and CI.
#   scripts/appliance.sh start CONFIG [serve flags...]   (waits until it answers)
#   scripts/appliance.sh stop CONFIG                     (SIGTERM; fails unless it exits 0)
#   scripts/appliance.sh kill CONFIG                     (SIGKILL: a crash; waits until it is gone)
# The pid and log live beside the config (CONFIG.pid, CONFIG.log; earlier
# runs' logs in CONFIG.log.old).
# FLINT_AS_UID=U runs the node as user id U (tests partition it with
# nftables rules that match its sockets' owner).
set -euo pipefail
cd "$(dirname "$0")/.."
flint=target/release/flint
cmd=$1 cfg=$2
shift 2
case "$cmd" in
start)
  as=()
  [ -n "${FLINT_AS_UID:-}" ] && as=(setpriv --reuid="$FLINT_AS_UID" --regid="$FLINT_AS_UID" --clear-groups)
  # The previous run's log is kept (CONFIG.log.old, every run appended).
  [ -e "$cfg.log" ] && cat "$cfg.log" >>"$cfg.log.old"
  "${as[@]}" "$flint" --config "$cfg" serve "$@" >"$cfg.log" 2>&1 &
  echo $! >"$cfg.pid"
  for _ in $(seq 1 200); do
    # Ours must be alive before and after the answer: another node left
    # on the same port would answer too.
    alive() { kill -0 "$(cat "$cfg.pid")" 2>/dev/null; }
    if alive && "$flint" --config "$cfg" status >/dev/null 2>&1 && sleep 0.2 && alive; then
      exit 0
    fi
    if ! alive; then
      echo "flint serve exited during start-up:" >&2
      cat "$cfg.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "flint serve did not answer within 20 s:" >&2
  cat "$cfg.log" >&2
  exit 1
  ;;
stop)
  pid=$(cat "$cfg.pid")
  kill -TERM "$pid"
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  # Not our child (started by another shell): wait for it to go.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  if ! grep -q "stopped cleanly" "$cfg.log"; then
    echo "flint serve did not stop cleanly (rc $rc):" >&2
    tail -20 "$cfg.log" >&2
    exit 1
  fi
  rm -f "$cfg.pid"
  ;;
kill)
  pid=$(cat "$cfg.pid")
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$cfg.pid"
  ;;
*)
  echo "usage: $0 start|stop|kill CONFIG [serve flags...]" >&2
  exit 2
  ;;
esac
