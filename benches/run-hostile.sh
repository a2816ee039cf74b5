#!/usr/bin/env bash
# Full-scale runs for issue 8 against a fresh release server each: hostile connections beside
# bystanders (push-bench hostile), the 30-minute soak (push-bench soak), and the SIGKILL crash
# test at scale on both stores. Output in benches/out/. Usage: benches/run-hostile.sh [hostile|soak|crash]...
set -euo pipefail
cd "$(dirname "$0")/.."
# Release build, OUT, SERVER, BENCH, secrets; start_server [flags].
. benches/server.sh

# server_with CONFIG-TEXT starts a server with that configuration file.
server_with() {
  printf '%s\n' "$1" >"$OUT/server.toml"
  start_server --config "$OUT/server.toml"
}

if [ $# -eq 0 ]; then set -- hostile soak crash; fi
for what in "$@"; do
  case $what in
    hostile)
      # Short heartbeats and small queues so the hostile connections meet both limits within
      # the 40-second run.
      server_with $'heartbeat_interval_ms = 5000\nheartbeat_timeout_ms = 15000\nqueue_max_bytes = 262144'
      "$BENCH" hostile --conns 2000 --slowloris 5000 --nonreaders 2000 --garbage-rate 200 \
        --messages 800 --rate 20 --size 4096 --server-pid "$SERVER_PID" | tee "$OUT/hostile.txt"
      curl -s http://127.0.0.1:7180/healthz >"$OUT/hostile-healthz.json"
      ;;
    soak)
      start_server
      "$BENCH" soak --conns 2000 --seconds 1800 --sample 60 --publish-rate 200 --churn-rate 50 \
        --server-pid "$SERVER_PID" --data-dir "$OUT/data" | tee "$OUT/soak.txt"
      ;;
    crash)
      pkill -f "$SERVER" 2>/dev/null || true
      for store in sled redb; do
        CRASH_STORE=$store CRASH_MESSAGES=30000 CRASH_KILLS=5 CRASH_PUBLISHERS=16 CRASH_KILL_MS_MAX=4000 \
          cargo test -q -p push-server --test crash -- --nocapture 2>&1 | tee "$OUT/crash-$store.txt"
      done
      ;;
  esac
done
pkill -f "$SERVER" 2>/dev/null || true
