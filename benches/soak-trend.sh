#!/usr/bin/env bash
# Memory trend for the CI log (issue 18), not a test: a 60-second soak (500 receivers,
# publishes, churn) against the given server binary, then one row per 10 s of its RSS and
# jemalloc's figures, and the change from the first sample after warm-up to the last. Nothing
# is asserted on the figures (CI machines are shared and noisy); the run fails only when the
# soak itself cannot run or loses messages. The hours-long runs are in BENCHMARKS.md
# (benches/run-soak.sh).
# Usage: benches/soak-trend.sh [SERVER [PUSH_BENCH [SECONDS]]]
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER=${1:-target/debug/push-server}
BENCH=${2:-target/debug/push-bench}
SECONDS_TOTAL=${3:-60}
dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tcp=$(port); http=$(port)
export PUSH_JWT_SECRET=trend-secret-0123456789abcdef PUSH_API_TOKEN=trend-api-token
PUSH_API_TOKENS=$PUSH_API_TOKEN RUST_LOG=warn "$SERVER" --listen 127.0.0.1:$tcp \
  --http-listen 127.0.0.1:$http --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:$http/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
"$BENCH" soak --addr 127.0.0.1:$tcp --http 127.0.0.1:$http --conns 500 --seconds "$SECONDS_TOTAL" \
  --sample 10 --publish-rate 100 --churn-rate 20 --server-pid $server --data-dir "$dir/data" \
  2>/dev/null | tail -1 >"$dir/soak.json"
python3 - "$dir/soak.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
mb = lambda b: "-" if b is None else f"{b / 1e6:.1f}"
print("memory trend (report only, nothing asserted):")
print(f"{'s':>5} {'RSS MB':>8} {'allocated':>10} {'active':>8} {'resident':>9} {'dirty':>7} {'fds':>6} {'delivered':>11}")
rows = v["samples"]
for r in rows:
    print(f"{r['t_s']:>5} {mb(r['rss_bytes']):>8} {mb(r.get('allocated_bytes')):>10} {mb(r.get('allocator_active_bytes')):>8} "
          f"{mb(r.get('allocator_resident_bytes')):>9} {mb(r.get('allocator_dirty_bytes')):>7} {r['fds']:>6} {r['received']:>11,}")
warm = rows[1] if len(rows) > 2 else rows[0]
last = rows[-1]
for k, name in [("rss_bytes", "RSS"), ("allocated_bytes", "allocated")]:
    if warm.get(k) is not None and last.get(k) is not None:
        print(f"{name}: {mb(warm[k])} -> {mb(last[k])} MB from {warm['t_s']} s to {last['t_s']} s")
print(f"delivered {v['deliveries_received']:,} of {v['deliveries_expected']:,}, lost {v['deliveries_lost']}")
sys.exit(1 if v["deliveries_lost"] else 0)
PY
