#!/usr/bin/env bash
# Durable PUBLISH -> PUBLISH_ACK over the binary protocol (issue 19): `push-bench publish-ack`
# against a fresh release server per run (client publishing allowed, no per-connection publish
# or frame rate limit), RUNS rounds (default 3) with the servers interleaved.
# SERVERS="name=path ..." compares server binaries (default: this build); STORES="sled redb"
# (default sled); ACK_ARGS are push-bench's (default: one connection, one in flight, 60,000
# messages: about 20 s, which spans two compaction passes).
# Output: benches/out/ack-NAME-STORE-N.txt and one summary line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
SERVERS=${SERVERS:-current=$SERVER}
ACK_ARGS=${ACK_ARGS:---conns 1 --in-flight 1 --messages 60000}
export PUSH_ALLOW_CLIENT_PUBLISH=true PUSH_MAX_PUBLISHES_PER_SEC=0 PUSH_MAX_FRAMES_PER_SEC=0
for n in $(seq "${RUNS:-3}"); do
  for store in ${STORES:-sled}; do
    for entry in $SERVERS; do
      name=${entry%%=*} SERVER=${entry#*=}
      start_server --store "$store"
      # shellcheck disable=SC2086
      "$BENCH" publish-ack $ACK_ARGS --server-pid "$SERVER_PID" >"$OUT/ack-$name-$store-$n.txt" 2>&1 || true
      pkill -f "$SERVER" || true
      echo "$name $store #$n: $(tail -1 "$OUT/ack-$name-$store-$n.txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
slow = r.pop("slow_acks")
big = [(round(t, 1), us) for t, us in slow if us > 20000]
print("acked/s %s p50 %s p99 %s p99.9 %s max %s us; server CPU %.1f us/msg; %s/%s acked%s; acks > 10 ms: %d, > 20 ms (of the first 200 slow): %d%s" % (
    r["acked_per_second"], r["ack_p50_us"], r["ack_p99_us"], r["ack_p999_us"], r["ack_max_us"],
    r.get("server_cpu_us_per_message") or 0, r["messages_acked"], r["messages_requested"],
    "; " + r["first_error"] if r.get("first_error") else "", r["slow_acks_total"], len(big),
    " at " + str(big) if 0 < len(big) <= 8 else ""))' 2>/dev/null || tail -1 "$OUT/ack-$name-$store-$n.txt")"
    done
  done
done
