#!/usr/bin/env bash
# Builds the release binaries and runs the load benchmark. Prints figures
# with their goals and ratios; see docs/PERFORMANCE.md.
#   BENCH_SECONDS=N   seconds per phase (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
cargo build --release --quiet -p gatehouse -p gatehouse-bench
exec "$CARGO_TARGET_DIR/release/gatehouse-bench" "$@"
