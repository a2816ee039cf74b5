#!/usr/bin/env bash
# Long memory soaks (issue 18): push-bench soak against a fresh release server, one per NAME=STORE
# argument, all running side by side, each on its own ports and data directory so they do not
# share a process. Output in benches/out/soak-NAME.txt (rows appear as they are sampled).
# Usage: SOAK_SECONDS=10800 benches/run-soak.sh sled=sled redb=redb (SOAK_PORT: the first TCP
# port, default 7300; HTTP on port + 80; each further run one port up)
# A NAME containing "nobg" runs with jemalloc's background thread off (the control run);
# SOAK_MALLOC_CONF adds jemalloc options to every run (e.g. dirty_decay_ms:0).
set -euo pipefail
cd "$(dirname "$0")/.."
# SOAK_BUILD=0 runs the release binaries as they are (e.g. while another soak is using them).
if [ "${SOAK_BUILD:-1}" != 0 ]; then cargo build --release -q -p push-server -p push-benches; fi
OUT=benches/out
mkdir -p "$OUT"
SERVER=$PWD/target/release/push-server
BENCH=$PWD/target/release/push-bench
export PUSH_JWT_SECRET=bench-secret-0123456789abcdef
export PUSH_API_TOKEN=bench-api-token
SECONDS_TOTAL=${SOAK_SECONDS:-10800}
if [ $# -eq 0 ]; then set -- sled=sled redb=redb; fi

port=${SOAK_PORT:-7300}
pids=()
for run in "$@"; do
  name=${run%%=*}; store=${run#*=}
  data="$OUT/soak-$name-data"; rm -rf "$data"
  conf=${SOAK_MALLOC_CONF:-}
  case $name in *nobg*) conf="${conf:+$conf,}background_thread:false" ;; esac
  _RJEM_MALLOC_CONF=$conf PUSH_API_TOKENS=$PUSH_API_TOKEN RUST_LOG=warn "$SERVER" \
    --listen 127.0.0.1:$port --http-listen 127.0.0.1:$((port + 80)) --store "$store" \
    --data-dir "$data" >"$OUT/soak-$name-server.log" 2>&1 &
  server=$!
  for _ in $(seq 50); do
    curl -sf http://127.0.0.1:$((port + 80))/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
  (
    "$BENCH" soak --addr 127.0.0.1:$port --http 127.0.0.1:$((port + 80)) --conns 2000 \
      --seconds "$SECONDS_TOTAL" --sample 60 --publish-rate 200 --churn-rate 50 \
      --server-pid "$server" --data-dir "$data" >"$OUT/soak-$name.txt" 2>&1
    kill "$server"
  ) &
  pids+=($!)
  port=$((port + 1))
done
wait "${pids[@]}"
