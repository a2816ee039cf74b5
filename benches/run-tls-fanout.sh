#!/usr/bin/env bash
# Fan-out over TLS (issue 19): 10,000 receivers on TLS 1.3 connections in one room, publishers
# on binary PUBLISH over TLS (every listener speaks TLS, so the HTTP API is no plain way in;
# the publishers are members of the room without echo, so each also receives the others' messages);
# rows max (600 messages, 32 publishers, max rate) and 50 (500 messages at 50 msg/s), a fresh
# release server per run, RUNS rounds (default 2) with rows and servers interleaved.
# SERVERS="name=path ..." compares server binaries (default: this build).
# Output: benches/out/tls-fanout-NAME-ROW-N.txt, and one summary line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
make_tls_cert
SERVERS=${SERVERS:-current=$SERVER}
export PUSH_TLS__CERT=$TLS_DIR/cert.pem PUSH_TLS__KEY=$TLS_DIR/key.pem
export PUSH_ALLOW_CLIENT_PUBLISH=true PUSH_MAX_PUBLISHES_PER_SEC=0 PUSH_MAX_FRAMES_PER_SEC=0
for n in $(seq "${RUNS:-2}"); do
  for row in ${ROWS:-max 50}; do
    for entry in $SERVERS; do
      name=${entry%%=*} SERVER=${entry#*=}
      case $row in
        max) args=(--messages 600 --rate 0 --publishers 32) ;;
        50) args=(--messages 500 --rate 50) ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
      esac
      start_server
      out=$OUT/tls-fanout-$name-$row-$n.txt
      "$BENCH" fanout --conns 10000 --size 100 "${args[@]}" --tls-ca "$TLS_DIR/cert.pem" \
        --server-pid "$SERVER_PID" >"$out" 2>&1 || true
      echo "$name $row #$n: $(tail -1 "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
l = r["latency"]
print("%s/%s delivered, %s deliveries/s, %s us CPU/delivery, publish %s msg/s, p50 %s / p99 %s ms" % (
    r["deliveries_received"], r["deliveries_expected"], r["deliveries_per_second"],
    r.get("server_cpu_us_per_delivery"), r["publish_rate_achieved"], l["p50_ms"], l["p99_ms"]))' 2>/dev/null || tail -1 "$out")"
      pkill -f "$SERVER" || true
    done
  done
done
