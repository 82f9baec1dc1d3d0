#!/usr/bin/env bash
# SQLite beside PostgreSQL (one instance and two) in one run, and whoami
# with 1M users / 10M tokens against 1k users; prints figures and ratios
# (docs/PERFORMANCE.md). PostgreSQL runs durable (fsync and synchronous
# commit on), as SQLite's default durability=full is.
#   BENCH_SECONDS=N         seconds per phase (default 5)
#   BENCH_SCALE_USERS=N     users of the large database (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
bash interop/postgres/pg.sh install
cargo build --release --quiet -p gatehouse -p gatehouse-bench
base="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
trap 'bash interop/postgres/pg.sh stop "$base/pg"; rm -rf "$base"' EXIT
url="$(PG_DURABLE=1 bash interop/postgres/pg.sh start "$base/pg" "$port" | sed -n 's/^POSTGRES_URL=//p')"
"$CARGO_TARGET_DIR/release/gatehouse-bench" engines "$url"
