#!/usr/bin/env bash
# Idle connection memory and connect rate (issue 19): `push-bench idle` rows, a fresh release
# server per run, RUNS rounds (default 2) with the rows and the servers interleaved.
# SERVERS="name=path ..." compares server binaries in the same rounds (default: this build).
# ROWS picks rows (default: all): tcp (18,000), room (18,000, each in one room), ws (10,000),
# tls (10,000, TLS 1.3, ECDSA P-256 self-signed certificate made here with openssl; each
# push-bench worker's connections share one SDK TlsOptions, so after its first handshakes they
# resume with session tickets), tls-full (the same with [tls] resumption = false: every
# handshake full). TLS rows also print the server's push_tls_handshakes_total.
# Output: benches/out/idle-NAME-ROW-N.txt, and the per-connection figure printed per run.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
SERVERS=${SERVERS:-current=$SERVER}
ROWS=${ROWS:-tcp room ws tls tls-full}
make_tls_cert
for n in $(seq "${RUNS:-2}"); do
  for entry in $SERVERS; do
    name=${entry%%=*} SERVER=${entry#*=}
    for row in $ROWS; do
      unset PUSH_TLS__CERT PUSH_TLS__KEY PUSH_TLS__RESUMPTION
      case $row in
        tcp) args=(--conns 18000) ;;
        room) args=(--conns 18000 --room idle-room) ;;
        ws) args=(--conns 10000 --ws) ;;
        tls|tls-full)
          args=(--conns 10000 --tls-ca "$TLS_DIR/cert.pem")
          export PUSH_TLS__CERT=$TLS_DIR/cert.pem PUSH_TLS__KEY=$TLS_DIR/key.pem
          if [ "$row" = tls-full ]; then export PUSH_TLS__RESUMPTION=false; fi ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
      esac
      start_server
      "$BENCH" idle "${args[@]}" --server-pid "$SERVER_PID" >"$OUT/idle-$name-$row-$n.txt" 2>&1 || true
      echo "$name $row #$n: $(tail -1 "$OUT/idle-$name-$row-$n.txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("per connection %s B, %s/%s connected, %s connects/s, cpu connecting %s s" % (
    r.get("server_rss_per_connection_bytes"), r["connections_ok"], r["connections_requested"],
    r["connects_per_second"], r.get("server_cpu_seconds_connecting")))' 2>/dev/null || tail -1 "$OUT/idle-$name-$row-$n.txt")"
      if [ -n "${PUSH_TLS__CERT:-}" ]; then
        curl -sk -H "Authorization: Bearer $PUSH_API_TOKEN" https://127.0.0.1:7180/metrics |
          grep '^push_tls_handshakes_total' | tr '\n' ' ' || true
        echo
      fi
      pkill -f "$SERVER" || true
    done
  done
done
