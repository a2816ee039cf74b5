#!/usr/bin/env bash
# What message tracing costs (issue 17): the max-rate fan-out row with tracing off, on with
# nothing sampled, and on with every publish traced (sample_ratio 1: push.accept, push.commit,
# push.fanout and 64 push.write spans per message, exported over OTLP/HTTP protobuf to
# benches/otlp_sink.py). RUNS rounds (default 3), the three modes interleaved in each round so
# background load falls on all of them alike; a fresh release server per run.
# Output: benches/out/tracing-MODE-N.txt (push-bench) and the sink's counts.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
ROW=${ROW:-fanout --conns 10000 --messages 600 --size 100 --rate 0 --publishers 32}
python3 benches/otlp_sink.py 4318 >"$OUT/tracing-sink.txt" 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true; pkill -f "$SERVER" 2>/dev/null || true' EXIT

run() { # mode, round
  local mode=$1 n=$2
  unset PUSH_TRACING__OTLP_ENDPOINT PUSH_TRACING__SAMPLE_RATIO
  case $mode in
    on-unsampled) export PUSH_TRACING__OTLP_ENDPOINT=http://127.0.0.1:4318 ;;
    on-traced) export PUSH_TRACING__OTLP_ENDPOINT=http://127.0.0.1:4318 PUSH_TRACING__SAMPLE_RATIO=1.0 ;;
  esac
  start_server
  # shellcheck disable=SC2086
  "$BENCH" $ROW --server-pid "$SERVER_PID" >"$OUT/tracing-$mode-$n.txt" 2>&1 || true
  echo "$mode #$n: $(tail -1 "$OUT/tracing-$mode-$n.txt")"
}

for n in $(seq "${RUNS:-3}"); do
  for mode in off on-unsampled on-traced; do run "$mode" "$n"; done
done
pkill -f "$SERVER" || true
kill $SINK; wait $SINK 2>/dev/null || true
cat "$OUT/tracing-sink.txt"
