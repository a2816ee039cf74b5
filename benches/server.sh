# Sourced by the bench scripts (from the repository root): builds the release binaries (the
# server, and push-bench from the push-benches crate), sets
# OUT, SERVER, BENCH and the bench secrets, and defines start_server [server flags...], which
# starts a fresh server on 127.0.0.1:7100 (TCP) and :7180 (HTTP) with an empty $OUT/data and
# sets SERVER_PID.
cargo build --release -q -p push-server -p push-benches
OUT=benches/out
mkdir -p "$OUT"
SERVER=${PUSH_BENCH_SERVER:-target/release/push-server}
BENCH=target/release/push-bench
export PUSH_JWT_SECRET=bench-secret-0123456789abcdef
export PUSH_API_TOKEN=bench-api-token

start_server() {
  pkill -f "$SERVER" 2>/dev/null || true
  sleep 0.5
  rm -rf "$OUT/data"
  PUSH_API_TOKENS=$PUSH_API_TOKEN RUST_LOG=warn "$SERVER" --listen 127.0.0.1:7100 \
    --http-listen 127.0.0.1:7180 --data-dir "$OUT/data" "$@" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  local scheme=http  # with PUSH_TLS__CERT set, every listener speaks TLS
  if [ -n "${PUSH_TLS__CERT:-}" ]; then scheme=https; fi
  for _ in $(seq 50); do
    if curl -sfk $scheme://127.0.0.1:7180/healthz >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}

# A self-signed ECDSA P-256 certificate for localhost in $OUT/tls (made once); sets TLS_DIR.
make_tls_cert() {
  TLS_DIR=$OUT/tls
  if [ ! -f "$TLS_DIR/cert.pem" ]; then
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
      -addext basicConstraints=critical,CA:FALSE \
      -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
  fi
}
