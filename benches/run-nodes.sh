#!/usr/bin/env bash
# Many connections across several push-server nodes on one machine (issue 15): a three-node
# NATS cluster (benches/nats.sh) and NODES push-server processes in cluster mode sharing
# 127.0.0.1:7100 (TCP) and :7180 (HTTP) with reuse_port, so the kernel spreads connections
# and API requests across them. push-bench workers connect from 127.0.0.2-127.0.0.9 (their
# own ephemeral ports each) and every server figure is summed over the nodes; NATS is
# reported apart. Raw output in benches/out/nodes/; a full-scale run writes its rows into
# BENCHMARKS.md (benches/nodes_table.py).
# Usage: benches/run-nodes.sh [small]   (small: 2 nodes, 1,000 connections, debug build; CI)
# ROWS="idle soak" runs only those rows (default: all, in the order below).
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${1:-}
if [ "$SMALL" = small ]; then
  cargo build -q -p push-server -p push-benches
  BIN=target/debug NODES=${NODES:-2} CONNS=${CONNS:-1000} UCONNS=200 UNICAST=200 RATE=100
  FCONNS=300 FMSG=1000 FRATE=100 SOAK=${SOAK:-30} SCONNS=300 SRATE=20 SROOM=10
else
  cargo build --release -q -p push-server -p push-benches
  BIN=target/release NODES=${NODES:-8} CONNS=${CONNS:-100000} UCONNS=10000 UNICAST=30000 RATE=10000
  FCONNS=${FCONNS:-100000} FMSG=20000 FRATE=1000
  SOAK=${SOAK:-1800} SCONNS=${SCONNS:-100000} SRATE=200 SROOM=1000
fi
OUT=benches/out/nodes
rm -rf "$OUT"
mkdir -p "$OUT"
. benches/nats.sh

start_node() { # node number: started in the background, its pid in NODE_PIDS
  PUSH_API_TOKENS=$PUSH_API_TOKEN PUSH_REUSE_PORT=true PUSH_CLUSTER__NODE_NAME="node$1" RUST_LOG=warn,push_server::server=info \
    "$BIN/push-server" --listen 127.0.0.1:7100 --http-listen 127.0.0.1:7180 \
    --data-dir "$OUT/node$1" >>"$OUT/node$1.log" 2>&1 &
  pids+=($!)
  NODE_PIDS[$1 - 1]=$!
}
wait_node() { # node number: until it listens (its log says so)
  for _ in $(seq 300); do grep -q "push server listening" "$OUT/node$1.log" && return; sleep 0.2; done
  echo "node$1 did not start" >&2; cat "$OUT/node$1.log" >&2; exit 1
}
NODE_PIDS=()
for i in $(seq "$NODES"); do start_node "$i"; done
for i in $(seq "$NODES"); do wait_node "$i"; done
SERVERS=$(IFS=,; echo "${NODE_PIDS[*]}")

rss_mb() { # summed RSS of the given pids, MB
  local kb=0
  for p in "$@"; do kb=$((kb + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
  awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}
pss_mb() { # summed proportional set size (pages shared between the nodes counted once), MB
  local kb=0
  for p in "$@"; do kb=$((kb + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
  awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}
sample() { # every second: connections (descriptors) per node, while a row runs
  while :; do
    local line=""
    # A killed node reads 0 (and must not end the sampler under `set -e`).
    for p in "${NODE_PIDS[@]}"; do line+="$( (ls "/proc/$p/fd" 2>/dev/null || true) | wc -l) "; done
    echo "$line" >>"$1"
    sleep 1
  done
}
run() { # name, then push-bench arguments (each row has users of its own)
  local name=$1; shift
  echo "== $name: push-bench $*" >&2
  echo "$*" >"$OUT/$name.cmd"
  sample "$OUT/$name.fds" &
  local sampler=$!
  "$BENCH_BIN" "$@" --source-ips 127.0.0.2-127.0.0.9 --server-pid "$SERVERS" --user-prefix "$name-" \
    >"$OUT/$name.txt" 2>&1 || true
  kill "$sampler" 2>/dev/null || true
  tail -1 "$OUT/$name.txt"
  echo "  nodes: $(sort -n -k1 "$OUT/$name.fds" | tail -1 | tr ' ' '\n' | grep -v '^$' | tr '\n' ' ')descriptors at the peak sample; NATS RSS $(rss_mb "${NATS_PIDS[@]}") MB; nodes RSS now $(rss_mb "${NODE_PIDS[@]}") MB, PSS $(pss_mb "${NODE_PIDS[@]}") MB" \
    | tee "$OUT/$name.extra"
}
BENCH_BIN=$BIN/push-bench
ROWS=" ${ROWS:-idle broadcast room unicast node-kill leader-kill soak} "
want() { [[ "$ROWS" == *" $1 "* ]]; }

want idle && run idle idle --conns "$CONNS" --hold 5 --concurrency 256
want broadcast && run broadcast fanout --broadcast --conns "$CONNS" --messages 20 --size 100 --rate 2 --publishers 1
want room && run room fanout --conns "$CONNS" --messages 20 --size 100 --rate 2 --publishers 1
want unicast && run unicast unicast --conns "$UCONNS" --messages "$UNICAST" --size 100 --rate "$RATE" --publishers 256

# Failures under load, with receivers that reconnect (the SDK client) and publishers that
# retry under the message id: a push node SIGKILLed 3 s into publishing, then the NATS server
# leading the users stream.
if want node-kill; then
  run node-kill unicast --conns "$FCONNS" --messages "$FMSG" --size 100 --rate "$FRATE" --publishers 64 \
    --resilient --kill-pid "${NODE_PIDS[-1]}" --kill-after 3 --drain 60
  unset 'NODE_PIDS[-1]'
  SERVERS=$(IFS=,; echo "${NODE_PIDS[*]}")
fi
leader=""
want leader-kill && leader=$(curl -s "http://127.0.0.1:18222/jsz?streams=true&accounts=true" | python3 -c '
import json, sys
for a in json.load(sys.stdin).get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"] == "PUSH_USERS":
            print(s["cluster"]["leader"][1:])')
want leader-kill && run leader-kill unicast --conns "$FCONNS" --messages "$FMSG" --size 100 --rate "$FRATE" \
  --publishers 64 --resilient --kill-pid "${NATS_PIDS[$leader]}" --kill-after 3 --drain 60

# The operator brings both back: the killed NATS server (it catches up with its stream
# replicas) and the killed push node (it takes new connections at once; nobody moves back).
if [ -n "$leader" ]; then
  "$NATS" -c "$OUT/n$leader.conf" >>"$OUT/n$leader.log" 2>&1 &
  pids+=($!)
  NATS_PIDS[$leader]=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((18222 + leader))/healthz" >/dev/null && break; sleep 0.2; done
fi
if want node-kill; then
  mv "$OUT/node$NODES.log" "$OUT/node$NODES.killed.log"
  start_node "$NODES"
  wait_node "$NODES"
  SERVERS=$(IFS=,; echo "${NODE_PIDS[*]}")
fi

# Churn and mixed load for a while across all the nodes again: node RSS, descriptors, NATS
# RSS and storage sampled every minute (every 10 s at small scale).
want soak && run soak soak --conns "$SCONNS" --seconds "$SOAK" --sample "$([ "$SMALL" = small ] && echo 10 || echo 60)" \
  --publish-rate "$SRATE" --room-every "$SROOM" --churn-rate 50 --concurrency 256 \
  --data-dir "$OUT/n0,$OUT/n1,$OUT/n2" --other-pid "$(IFS=,; echo "${NATS_PIDS[*]}")"

# A full-scale run writes its rows into BENCHMARKS.md (between the nodes markers).
[ "$SMALL" = small ] || python3 benches/nodes_table.py "$OUT" BENCHMARKS.md $ROWS

# Every row must have lost nothing and refused no connection (the CI run fails otherwise).
python3 - "$OUT" $ROWS <<'PY'
import json, sys, pathlib
bad = []
for name in sys.argv[2:]:
    line = (pathlib.Path(sys.argv[1]) / f"{name}.txt").read_text().strip().splitlines()[-1]
    r = json.loads(line)
    for key in ["connections_failed", "receivers_failed", "deliveries_lost", "duplicates_or_reordered", "publish_failures", "connections_lost", "churn_cycles_failed"]:
        if r.get(key, 0):
            bad.append(f"{name}: {key} = {r[key]}")
if bad:
    sys.exit("run-nodes: " + "; ".join(bad))
print("run-nodes: every row complete (0 lost, 0 failed)")
PY
