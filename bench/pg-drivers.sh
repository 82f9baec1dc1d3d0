#!/usr/bin/env bash
# The PostgreSQL driver comparison (decision 0014): tokio-postgres against
# sqlx on a throwaway cluster on loopback. Prints each run and the ratios.
#   BENCH_SECONDS=N   seconds per run (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
bash interop/postgres/pg.sh install
cargo build --release --quiet -p gatehouse-bench --features pg-drivers
base="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
trap 'bash interop/postgres/pg.sh stop "$base/pg"; rm -rf "$base"' EXIT
url="$(bash interop/postgres/pg.sh start "$base/pg" "$port" | sed -n 's/^POSTGRES_URL=//p')"
"$CARGO_TARGET_DIR/release/gatehouse-bench" pg-drivers "$url"
