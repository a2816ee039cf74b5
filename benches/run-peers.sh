#!/usr/bin/env bash
# The peer table (issue 19): this server, Mosquitto and nats-server (both from Debian's
# packages, installed here when missing) driven by the same harness, push-bench, speaking each
# one's own protocol (this project's binary protocol with HTTP publishers; MQTT 3.1.1 at QoS 0;
# NATS core), a fresh server for every run, rows and servers interleaved, RUNS rounds (default
# 2). Writes every run into BENCHMARKS.md between the peers markers.
#   benches/run-peers.sh          the full table
#   benches/run-peers.sh quick    small sizes, a smoke run (BENCHMARKS.md untouched)
# ROWS and PEERS pick a subset (defaults: all rows; push mqtt nats).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/server.sh
ulimit -n "$(ulimit -Hn)"
QUICK=${1:-}
MOSQUITTO=/usr/sbin/mosquitto
NATS_SERVER=/usr/sbin/nats-server  # Debian's 2.9 (the tests use a newer one from PyPI)
if [ ! -x "$MOSQUITTO" ] || [ ! -x "$NATS_SERVER" ]; then
  echo "installing mosquitto and nats-server from Debian's packages" >&2
  (apt-get update -q && apt-get install -y -q mosquitto nats-server) >"$OUT/peers-apt.log" 2>&1 ||
    { echo "apt-get install mosquitto nats-server failed; see $OUT/peers-apt.log" >&2; exit 1; }
fi
PEER_DIR=$OUT/peers
# KEEP=1 adds to (or redoes rows of) the last run instead of starting over.
if [ -z "${KEEP:-}" ]; then rm -rf "$PEER_DIR"; fi
mkdir -p "$PEER_DIR"
cat >"$PEER_DIR/mosquitto.conf" <<'CONF'
listener 1883 127.0.0.1
allow_anonymous true
connection_messages false
log_type error
CONF
cat >"$PEER_DIR/nats.conf" <<'CONF'
listen: "127.0.0.1:4222"
CONF
push_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- server protocol || echo +changes)"
if [ -n "${KEEP:-}" ] && [ -f "$PEER_DIR/versions" ]; then
  echo "push_added=$push_rev for ${ROWS:-every row}" >>"$PEER_DIR/versions"
else {
  echo "push=$push_rev"
  echo "mosquitto=$("$MOSQUITTO" -h 2>&1 | head -1 | awk '{print $3}')"
  echo "nats=$("$NATS_SERVER" --version | awk '{print $2}')"
  echo "machine=$(nproc) cores, $(uname -r)"
} >"$PEER_DIR/versions"
fi

stop_all() {
  pkill -f "$SERVER" 2>/dev/null || true
  pkill -x mosquitto 2>/dev/null || true
  pkill -f "$NATS_SERVER" 2>/dev/null || true
  sleep 0.5
}
trap stop_all EXIT

wait_port() { # port: until something accepts there
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

start_peer() { # push|mqtt|nats: a fresh server; sets SERVER_PID and PEER_ARGS
  stop_all
  case $1 in
    push) start_server; PEER_ARGS=() ;;
    mqtt)
      "$MOSQUITTO" -c "$PEER_DIR/mosquitto.conf" >"$PEER_DIR/mosquitto.log" 2>&1 &
      SERVER_PID=$!; wait_port 1883
      PEER_ARGS=(--peer mqtt --addr 127.0.0.1:1883) ;;
    nats)
      "$NATS_SERVER" -c "$PEER_DIR/nats.conf" >"$PEER_DIR/nats.log" 2>&1 &
      SERVER_PID=$!; wait_port 4222
      PEER_ARGS=(--peer nats --addr 127.0.0.1:4222) ;;
  esac
}

# Quick runs shrink every row: fewer subscribers and 20 messages.
if [ "$QUICK" = quick ]; then C1=500 C2=1000; else C1=10000 C2=18000; fi
m() { if [ "$QUICK" = quick ]; then echo 20; else echo "$1"; fi; }
# row name = push-bench arguments (sizes from the issue: 18,000 idle; 10,000 and 18,000
# subscribers at max rate and at 50 msg/s; one subscriber at 50 msg/s)
declare -A ARGS=(
  [idle]="idle --conns $C2 --room idle-room"
  [fanout-10k-max]="fanout --conns $C1 --messages $(m 600) --size 100 --rate 0 --publishers 32"
  [fanout-10k-50]="fanout --conns $C1 --messages $(m 500) --size 100 --rate 50"
  [fanout-18k-max]="fanout --conns $C2 --messages $(m 300) --size 100 --rate 0 --publishers 32"
  [fanout-18k-50]="fanout --conns $C2 --messages $(m 250) --size 100 --rate 50"
  [one-50]="fanout --conns 1 --messages $(m 500) --size 100 --rate 50"
  [one-50-transient]="fanout --conns 1 --messages $(m 500) --size 100 --rate 50 --transient"
  [one-50-binary]="fanout --conns 1 --messages $(m 500) --size 100 --rate 50 --binary-publish --publishers 1"
  [one-50-transient-binary]="fanout --conns 1 --messages $(m 500) --size 100 --rate 50 --transient --binary-publish --publishers 1"
)
# The binary-publish rows publish with PUBLISH frames (this server's rows only).
export PUSH_ALLOW_CLIENT_PUBLISH=true PUSH_MAX_PUBLISHES_PER_SEC=0
ROWS=${ROWS:-idle fanout-10k-max fanout-10k-50 fanout-18k-max fanout-18k-50 one-50 one-50-transient one-50-binary one-50-transient-binary}
PEERS=${PEERS:-push mqtt nats}
for n in $(seq "${RUNS:-2}"); do
  for row in $ROWS; do
    for peer in $PEERS; do
      # Peers' messages are all transient and published on open connections: the transient
      # and binary-publish rows are this server's alone.
      case $row in one-50-*) if [ "$peer" != push ]; then continue; fi ;; esac
      start_peer "$peer"
      read -ra args <<<"${ARGS[$row]}"
      file=$PEER_DIR/$row-$peer-$n
      echo "== round $n, $row, $peer: push-bench ${args[*]} ${PEER_ARGS[*]}" >&2
      rc=0
      "$BENCH" "${args[@]}" "${PEER_ARGS[@]}" --server-pid "$SERVER_PID" >"$file.txt" 2>"$file.err" || rc=$?
      cmd="push-bench ${args[*]} ${PEER_ARGS[*]}"
      echo "{\"row\":\"$row\",\"peer\":\"$peer\",\"run\":$n,\"exit\":$rc,\"cmd\":\"${cmd% }\"}" >"$file.meta"
      tail -1 "$file.txt" >&2 || true
    done
  done
done
stop_all
if [ "$QUICK" != quick ]; then
  python3 benches/peers_table.py "$PEER_DIR" BENCHMARKS.md
fi
