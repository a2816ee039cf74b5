#!/usr/bin/env bash
# Floods of valid frames (issue 12) against a fresh release server each, default limits:
# bystanders in room `news` receive 50 pushes/s through the HTTP API while flooders send ACK,
# JOIN (room `big` holds 1,000 messages), LEAVE/JOIN churn or PUBLISH as fast as their sockets
# take them. `none` is the baseline. Output in benches/out/flood-<kind>.txt.
# Usage: benches/run-flood.sh [seconds] [flooders] [kinds...]
set -euo pipefail
cd "$(dirname "$0")/.."
# Release build, OUT, SERVER, BENCH, secrets; start_server [flags].
. benches/server.sh

SECONDS_=${1:-20}
FLOODERS=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
if [ $# -eq 0 ]; then set -- none ack join churn publish; fi
for kind in "$@"; do
  start_server --allow-client-publish true
  "$BENCH" flood --kind "$kind" --flooders "$FLOODERS" --conns 100 --rate 50 \
    --seconds "$SECONDS_" --server-pid "$SERVER_PID" | tee "$OUT/flood-$kind.txt"
done
pkill -f "$SERVER" 2>/dev/null || true
