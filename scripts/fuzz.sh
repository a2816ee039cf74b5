#!/usr/bin/env bash
# Bounded fuzz run of every protocol target (decoder, reassembly, token check), seeded from
# protocol/fuzz/seeds (the SPEC.md vectors among them). Usage: scripts/fuzz.sh [seconds per target]
# Uses the stable toolchain with RUSTC_BOOTSTRAP=1 for cargo-fuzz's nightly flags, and no
# sanitizer (the targets assert their own limits). A crash leaves its input in
# protocol/fuzz/artifacts/<target>/; turn it into a regression test before fixing.
set -euo pipefail
cd "$(dirname "$0")/../protocol/fuzz"
SECONDS_PER_TARGET=${1:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
for target in decode reassembly token handshake websocket; do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${SECONDS_PER_TARGET}s" >&2
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $target failed (crash inputs, if any, in protocol/fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done" "$log" >&2
  rm -f "$log"
done
