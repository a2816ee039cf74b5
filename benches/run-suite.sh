#!/usr/bin/env bash
# Runs the standard load suite against a fresh release server per scenario and writes the
# figures into BENCHMARKS.md (between the suite markers). Usage: benches/run-suite.sh [quick]
#   quick: small sizes, for a smoke run (does not touch BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Release build, OUT, SERVER, BENCH, secrets; start_server [flags].
. benches/server.sh
QUICK=${1:-}

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

disk_per_message() { # store: 10,000 messages of 100 B to offline users, bytes on disk per message
  local store=$1
  start_server --store "$store"
  local before after users body
  before=$(du -sb "$OUT/data" | cut -f1)
  users=$(python3 -c 'import json; print(json.dumps(["offline%d" % i for i in range(100)]))')
  body="{\"to\":{\"users\":$users},\"kind\":\"bench\",\"payload\":\"$(head -c 100 /dev/zero | tr '\0' x)\"}"
  for _ in $(seq 100); do
    curl -sf -o /dev/null -H "Authorization: Bearer $PUSH_API_TOKEN" -H 'Content-Type: application/json' \
      -d "$body" http://127.0.0.1:7180/api/v1/push
  done
  sleep 1
  after=$(du -sb "$OUT/data" | cut -f1)
  echo "{\"store\":\"$store\",\"messages\":10000,\"payload_bytes\":100,\"disk_bytes_before\":$before,\"disk_bytes_after\":$after,\"bytes_per_message\":$(( (after - before) / 10000 ))}" >"$OUT/disk-$store.json"
  echo "100 requests x 100 offline users, 100 B payload (curl)" >"$OUT/disk-$store.cmd"
}

start_server; run idle idle --conns 18000
start_server; run fanout-50 fanout --conns 10000 --messages 500 --size 100 --rate 50
start_server; run fanout-max fanout --conns 10000 --messages 600 --size 100 --rate 0 --publishers 32
start_server; run unicast unicast --conns 10000 --messages 100000 --size 100 --rate 10000 --publishers 32
start_server --store redb; run unicast-redb unicast --conns 10000 --messages 100000 --size 100 --rate 10000 --publishers 32
start_server; run durable-max unicast --conns 10000 --messages 3000 --batch 100 --size 100 --rate 0 --publishers 16
start_server --store redb; run durable-max-redb unicast --conns 10000 --messages 3000 --batch 100 --size 100 --rate 0 --publishers 16
start_server; run churn churn --rate 1000 --seconds 30
disk_per_message sled
disk_per_message redb
pkill -f "$SERVER" || true
python3 benches/suite_table.py "$OUT" BENCHMARKS.md
