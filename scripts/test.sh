#!/usr/bin/env bash
# Runs every test of the workspace. Installs and starts what the tests need when it is missing:
# a RabbitMQ broker on 127.0.0.1:5672 for the message-queue ingestion tests.
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

ensure_rabbitmq
cargo test --workspace --all-targets
cargo test --workspace --doc
