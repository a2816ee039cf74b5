#!/usr/bin/env bash
# Cluster-mode figures (issue 14): a three-node NATS cluster (the pinned nats-server,
# `sync_interval: always`, streams with 3 replicas) and two push-server nodes, all on
# 127.0.0.1 and the same two cores as the harness. Receivers connect to node A; publishers
# post through node B's HTTP API, so every message crosses nodes. Raw output in
# benches/out/cluster/. Usage: benches/run-cluster.sh [small]   (small: a CI-sized run)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p push-server -p push-benches
OUT=benches/out/cluster
rm -rf "$OUT"
mkdir -p "$OUT"
BENCH=target/release/push-bench
. benches/nats.sh
node() { # name tcp http
  PUSH_API_TOKENS=$PUSH_API_TOKEN RUST_LOG=warn target/release/push-server --listen "127.0.0.1:$2" \
    --http-listen "127.0.0.1:$3" --data-dir "$OUT/$1" >"$OUT/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$3/healthz" >/dev/null && return; sleep 0.1; done
  echo "node $1 did not start" >&2; cat "$OUT/$1.log" >&2; exit 1
}
node a 7100 7180
A_PID=${pids[-1]}
node b 7101 7181

names=(nats0 nats1 nats2 node-a node-b)
cpu() { # CPU seconds used so far by each of the cluster's processes
  local tck; tck=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do awk -v t="$tck" '{printf "%.2f ", ($14 + $15) / t}' "/proc/$p/stat"; done
}
run() { # name, then push-bench arguments
  local name=$1; shift
  echo "== $name: push-bench $*" >&2
  local before; before=$(cpu)
  "$BENCH" "$@" --addr 127.0.0.1:7100 --http 127.0.0.1:7181 --server-pid "$A_PID" \
    >"$OUT/$name.txt" 2>&1 || true
  tail -1 "$OUT/$name.txt"
  # Where the machine's two cores went during the run (the harness takes the rest).
  paste -d' ' <(echo "${names[*]}" | tr ' ' '\n') <(echo "$before" | tr ' ' '\n' | head -5) \
    <(cpu | tr ' ' '\n' | head -5) | awk '{printf "%s %.1f s  ", $1, $3 - $2} END {print "(CPU during the run)"}'
}

if [ "${1:-}" = small ]; then
  run unicast-100 unicast --conns 100 --messages 500 --size 100 --rate 100 --publishers 8
  exit 0
fi
run unicast-50 unicast --conns 100 --messages 1000 --size 100 --rate 50 --publishers 1
run unicast-1000 unicast --conns 1000 --messages 10000 --size 100 --rate 1000 --publishers 32
run unicast-10000 unicast --conns 10000 --messages 50000 --size 100 --rate 10000 --publishers 256
run unicast-max unicast --conns 1000 --messages 200 --batch 100 --size 100 --rate 0 --publishers 16
