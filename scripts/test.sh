#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
