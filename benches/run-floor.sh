#!/usr/bin/env bash
# The latency floor (issue 19): one subscriber, 500 x 100 B at 50 msg/s published with binary
# PUBLISH on an open connection, durable on sled and redb and transient, next to this disk's own
# fsync latency probed in the same round (benches/fsync_probe.py: 100-byte append + fsync at
# 50/s, in the server's data directory's file system). RUNS rounds (default 2), a fresh server
# per run. Output: one line per run, raw files benches/out/floor-*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
export PUSH_ALLOW_CLIENT_PUBLISH=true PUSH_MAX_PUBLISHES_PER_SEC=0
for n in $(seq "${RUNS:-2}"); do
  echo "round $n fsync: $(python3 benches/fsync_probe.py "$OUT/probe" 500 50)"
  for row in sled redb transient; do
    extra=()
    case $row in
      sled) start_server ;;
      redb) start_server --store redb ;;
      transient) start_server; extra=(--transient) ;;
    esac
    out=$OUT/floor-$row-$n.txt
    "$BENCH" fanout --conns 1 --messages 500 --size 100 --rate 50 --binary-publish \
      --publishers 1 "${extra[@]}" --server-pid "$SERVER_PID" >"$out" 2>&1 || true
    echo "round $n $row: $(tail -1 "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); l = r["latency"]
print("%s/%s received, p50 %s / p99 %s / p99.9 %s / max %s ms" % (r["deliveries_received"],
    r["deliveries_expected"], l["p50_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"]))' 2>/dev/null || tail -1 "$out")"
    pkill -f "$SERVER" || true
  done
done
