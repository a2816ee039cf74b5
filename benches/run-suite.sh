#!/usr/bin/env bash
# Runs the standard load suite against a fresh release server per scenario and writes the
# figures into BENCHMARKS.md (between the suite markers). Usage: benches/run-suite.sh [quick]
#   quick: small sizes, for a smoke run (does not touch BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p push-server -p push-client
OUT=benches/out
mkdir -p "$OUT"
SERVER=target/release/push-server
BENCH=target/release/push-bench
export PUSH_JWT_SECRET=bench-secret-0123456789abcdef
export PUSH_API_TOKEN=bench-api-token
QUICK=${1:-}

start_server() {
  pkill -f "$SERVER" 2>/dev/null || true
  sleep 0.5
  PUSH_API_TOKENS=$PUSH_API_TOKEN RUST_LOG=warn "$SERVER" --listen 127.0.0.1:7100 \
    --http-listen 127.0.0.1:7180 "$@" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 50); do
    if curl -sf http://127.0.0.1:7180/healthz >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}

run() { # name, then push-bench arguments
  local name=$1; shift
  echo "== $name: push-bench $*" >&2
  "$BENCH" "$@" --server-pid "$SERVER_PID" | tee "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
  echo "$*" >"$OUT/$name.cmd"
}

if [ "$QUICK" = quick ]; then
  start_server; run idle idle --conns 500
  start_server; run fanout-50 fanout --conns 200 --messages 20 --rate 50
  start_server; run churn churn --rate 100 --seconds 2
  pkill -f "$SERVER" || true
  exit 0
fi

start_server; run idle idle --conns 18000
start_server; run fanout-50 fanout --conns 10000 --messages 500 --size 100 --rate 50
start_server; run fanout-max fanout --conns 10000 --messages 300 --size 100 --rate 0 --publishers 4
start_server; run unicast unicast --conns 10000 --messages 100000 --size 100 --rate 10000 --publishers 8
start_server; run churn churn --rate 1000 --seconds 30
pkill -f "$SERVER" || true
python3 benches/suite_table.py "$OUT" BENCHMARKS.md
