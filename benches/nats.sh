# Sourced by the cluster bench scripts (from the repository root, with OUT set): sets the
# bench secrets, kills every process in `pids` on exit, starts a three-node NATS cluster of
# the pinned nats-server (`sync_interval: always`, JetStream) on 127.0.0.1:14222-14224,
# waits until each is healthy, and sets NATS_PIDS and PUSH_CLUSTER__NATS_URLS. Processes the
# caller starts go into `pids` too.
export PUSH_JWT_SECRET=bench-secret-0123456789abcdef
export PUSH_API_TOKEN=bench-api-token
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
NATS=${PUSH_TEST_NATS_SERVER:-nats-server}
routes="\"nats-route://127.0.0.1:16222\", \"nats-route://127.0.0.1:16223\", \"nats-route://127.0.0.1:16224\""
NATS_PIDS=()
for i in 0 1 2; do
  cat >"$OUT/n$i.conf" <<CONF
server_name: n$i
listen: "127.0.0.1:$((14222 + i))"
http: "127.0.0.1:$((18222 + i))"
jetstream { store_dir: "$OUT/n$i", sync_interval: always }
cluster { name: bench, listen: "127.0.0.1:$((16222 + i))", routes: [$routes] }
CONF
  "$NATS" -c "$OUT/n$i.conf" >"$OUT/n$i.log" 2>&1 &
  pids+=($!)
  NATS_PIDS+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((18222 + i))/healthz" >/dev/null && break
    sleep 0.2
  done
done
export PUSH_CLUSTER__NATS_URLS="nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
