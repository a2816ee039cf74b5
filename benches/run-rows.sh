#!/usr/bin/env bash
# Runs the quick suite and the standard idle and fan-out rows against a fresh release server
# per row, for before/after comparisons of a change; raw output in benches/out/rows-*.
# Usage: benches/run-rows.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh

run() { # name, then push-bench arguments
  local name=$1; shift
  echo "== $name: push-bench $*" >&2
  "$BENCH" "$@" --server-pid "$SERVER_PID" >"$OUT/rows-$name.txt" 2>&1 || true
  tail -1 "$OUT/rows-$name.txt"
}

start_server; run quick-idle idle --conns 500
start_server; run quick-fanout-50 fanout --conns 200 --messages 20 --rate 50
start_server; run quick-churn churn --rate 100 --seconds 2
start_server; run idle idle --conns 18000
start_server; run fanout-50 fanout --conns 10000 --messages 500 --size 100 --rate 50
start_server; run fanout-max fanout --conns 10000 --messages 600 --size 100 --rate 0 --publishers 32
pkill -f "$SERVER" || true
