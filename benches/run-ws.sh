#!/usr/bin/env bash
# WebSocket fan-out next to TCP (issue 19): `push-bench fanout --conns 10000 --messages 500
# --size 100 --rate 50` with receivers on TCP, WebSocket binary mode and WebSocket JSON mode,
# a fresh release server per run, RUNS rounds (default 2) with the rows interleaved.
# SERVERS="name=path ..." compares server binaries in the same rounds (default: this build).
# Output: benches/out/ws-NAME-ROW-N.txt
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
ROW=${ROW:-fanout --conns 10000 --messages 500 --size 100 --rate 50}
SERVERS=${SERVERS:-current=$SERVER}
for n in $(seq "${RUNS:-2}"); do
  for entry in $SERVERS; do
    name=${entry%%=*} SERVER=${entry#*=}
    for row in tcp ws ws-json; do
      case $row in tcp) flag= ;; ws) flag=--ws ;; ws-json) flag=--ws-json ;; esac
      start_server
      # shellcheck disable=SC2086
      "$BENCH" $ROW $flag --server-pid "$SERVER_PID" >"$OUT/ws-$name-$row-$n.txt" 2>&1 || true
      echo "$name $row #$n: $(tail -1 "$OUT/ws-$name-$row-$n.txt")"
      pkill -f "$SERVER" || true
    done
  done
done
