#!/usr/bin/env bash
# Transient messages (protocol version 2) against stored ones, same harness, fresh release
# server per row: publish -> receive latency with one subscriber at 50 msg/s, and fan-out to
# 10,000. Raw output in benches/out/transient-*.txt.
# Usage: benches/run-transient.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh

run() { # name, then push-bench arguments
  local name=$1; shift
  echo "== $name: push-bench $*" >&2
  "$BENCH" "$@" --server-pid "$SERVER_PID" >"$OUT/transient-$name.txt" 2>&1 || true
  tail -1 "$OUT/transient-$name.txt"
}

for kind in stored transient; do
  flag=""
  if [ "$kind" = transient ]; then flag="--transient"; fi
  start_server; run "latency-$kind" unicast --conns 1 --messages 1000 --size 100 --rate 50 --publishers 1 $flag
  start_server; run "fanout-$kind" fanout --conns 10000 --messages 200 --size 100 --rate 50 $flag
done
pkill -f "$SERVER" || true
