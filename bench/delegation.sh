#!/usr/bin/env bash
# What delegation costs, measured against baselines in the same run:
# introspections/s against a bare axum server, a room request on a
# delegating Synapse against a Synapse with its own authentication, and
# login through delegation against a standalone Gatehouse. Release build,
# default Argon2 cost, rate limits out of the way. See docs/PERFORMANCE.md.
#   BENCH_SECONDS=N   seconds per phase (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
cargo build --release --quiet -p gatehouse -p gatehouse-bench
bash interop/synapse/synapse.sh install

work="$(mktemp -d)"
cleanup() {
  scripts/stack down "$work/stack" >/dev/null 2>&1 || true
  bash interop/synapse/synapse.sh stop "$work/own" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

export GATEHOUSE_BIN="${GATEHOUSE_BIN:-$CARGO_TARGET_DIR/release/gatehouse}"
export GATEHOUSE_LOG_FILTER=warn
for limit in LOGIN_PER_ADDRESS LOGIN_PER_ACCOUNT FAILED_LOGINS_PER_ACCOUNT; do
  export "GATEHOUSE_RATE_LIMITS__${limit}__PER_SECOND=1000000"
  export "GATEHOUSE_RATE_LIMITS__${limit}__BURST_COUNT=1000000"
done

echo "== a delegating stack" >&2
eval "$(scripts/stack up "$work/stack" | grep -E '^[A-Z_]+=')"
scripts/stack gatehouse "$work/stack" user create bench --password bench-password >/dev/null

echo "== a Synapse with its own authentication" >&2
own_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
eval "$(bash interop/synapse/synapse.sh start "$work/own" "$own_port")"
OWN_URL="$SYNAPSE_URL"
bash interop/synapse/synapse.sh create-user "$work/own" bench bench-password >/dev/null

json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
login() { # URL → access token
  curl -sf -X POST "$1/_matrix/client/v3/login" \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bench"},"password":"bench-password"}' | json access_token
}
room() { # URL TOKEN → room ID
  curl -sf -X POST -H "Authorization: Bearer $2" "$1/_matrix/client/v3/createRoom" -d '{}' | json room_id
}
OWN_TOKEN="$(login "$OWN_URL")"
DELEGATED_TOKEN="$(login "$GATEHOUSE_URL")"
export OWN_TOKEN
OWN_ROOM="$(room "$OWN_URL" "$OWN_TOKEN")"
DELEGATED_ROOM="$(room "$CLIENT_URL" "$DELEGATED_TOKEN")"
eval "$(scripts/stack env "$work/stack" | grep -E '^[A-Z_]+=')"

GATEHOUSE_URL="$GATEHOUSE_URL" HS_SECRET_FILE="$work/stack/shared-secret" \
  SYNAPSE_DELEGATED_URL="$SYNAPSE_URL" SYNAPSE_OWN_URL="$OWN_URL" \
  SYNAPSE_DELEGATED_PID="$(cat "$work/stack/synapse/synapse.pid")" \
  OWN_ROOM="$OWN_ROOM" DELEGATED_ROOM="$DELEGATED_ROOM" \
  "$CARGO_TARGET_DIR/release/gatehouse-bench" delegation
