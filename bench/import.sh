#!/usr/bin/env bash
# Benchmarks `gatehouse import synapse --tokens` on a synthetic Synapse
# database with Synapse's real schema. Prints figures with their goal and
# ratio, in the style of bench/run.sh; see docs/PERFORMANCE.md.
#
#   bench/import.sh [--users N] [--batch-size N] [--regenerate]
#
#   --users N       accounts in the synthetic database (default 1000000)
#   --batch-size N  passed to the import (default: the command's own)
#   --no-tokens     import accounts, 3PIDs and devices only (no sessions)
#   --regenerate    make the synthetic database again even if it exists
#
# Environment:
#   BENCH_IMPORT_DIR   work directory (default $HOME/.cache/gatehouse-bench/import):
#                      the empty Synapse schema, the synthetic databases (kept
#                      between runs, one per N) and the Gatehouse data directory
#                      (made fresh on every run)
#
# It installs Synapse (interop/synapse/synapse.sh install) to get its schema
# and Debian's `time` package (for /usr/bin/time -v) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
WORK="${BENCH_IMPORT_DIR:-$HOME/.cache/gatehouse-bench/import}"
SYNAPSE_VENV="${GATEHOUSE_SYNAPSE_VENV:-$HOME/.cache/gatehouse-synapse-venv}"
GOAL_USERS_PER_S=50000

users=1000000
batch=()
regenerate=0
tokens=(--tokens)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --users) users="$2"; shift 2 ;;
    --regenerate) regenerate=1; shift ;;
    --batch-size) batch=(--batch-size "$2"); shift 2 ;;
    --no-tokens) tokens=(); shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/import.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ "$users" =~ ^[0-9]+$ && "$users" -gt 0 ]] || { echo "bench/import.sh: --users needs a positive number" >&2; exit 2; }
log() { echo "bench/import.sh: $*" >&2; }

if [[ ! -x /usr/bin/time ]]; then
  log "installing Debian's time package (for /usr/bin/time -v)"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq time >/dev/null
fi

log "building the release binary"
cargo build --release --quiet -p gatehouse
BIN="$CARGO_TARGET_DIR/release/gatehouse"
mkdir -p "$WORK"

# Synapse's schema, from the real thing: one start on an empty directory
# creates every table, column and index; its database is kept as the template.
bash interop/synapse/synapse.sh install
SYNAPSE_VERSION="$("$SYNAPSE_VENV/bin/python" -c 'import synapse; print(synapse.__version__)')"
SCHEMA="$WORK/synapse-$SYNAPSE_VERSION-empty.db"
if [[ ! -f "$SCHEMA" ]]; then
  log "starting Synapse $SYNAPSE_VERSION once for its schema"
  tmp="$(mktemp -d)"
  trap 'bash "$ROOT/interop/synapse/synapse.sh" stop "$tmp" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  bash interop/synapse/synapse.sh start "$tmp" "$port" >/dev/null
  bash interop/synapse/synapse.sh stop "$tmp"
  cp "$tmp/homeserver.db" "$SCHEMA.tmp"
  mv "$SCHEMA.tmp" "$SCHEMA"
  rm -rf "$tmp"
  trap - EXIT
fi

DB="$WORK/synapse-$SYNAPSE_VERSION-$users-users.db"
if [[ ! -f "$DB" || "$regenerate" == 1 ]]; then
  log "making a synthetic Synapse database of $users users (kept as $DB)"
  "$SYNAPSE_VENV/bin/python" bench/synthetic_synapse_db.py --schema "$SCHEMA" --out "$DB" --users "$users"
fi

DATA="$WORK/gatehouse-data"
rm -rf "$DATA"
# Read once, so that every run starts with the file in the page cache
# (dropping caches needs root, and would measure the disk, not the import).
cat "$DB" >/dev/null

log "importing"
out="$WORK/import.stdout"
err="$WORK/import.stderr"
/usr/bin/time -v "$BIN" --data-dir "$DATA" import synapse --database "$DB" "${tokens[@]}" "${batch[@]}" \
  >"$out" 2>"$err" &
timer=$!
# /usr/bin/time's peak RSS counts the pages of the memory-mapped Synapse
# file the reader touched; the anonymous part (heap, SQLite's page cache) is
# sampled here to tell them apart.
anon_peak=0
while kill -0 "$timer" 2>/dev/null; do
  pid="$(pgrep -P "$timer" -x gatehouse || true)"
  if [[ -n "$pid" ]]; then
    anon="$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
    [[ -n "$anon" && "$anon" -gt "$anon_peak" ]] && anon_peak="$anon"
  fi
  sleep 0.2
done
if ! wait "$timer"; then
  cat "$err" >&2
  exit 1
fi
summary="$(cat "$out")"
rate="$(sed -n 's/.*(\([0-9.]*\) users\/s)$/\1/p' "$out")"
wall="$(sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' "$out")"
rss_kib="$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$err")"
cpu_pct="$(sed -n 's/^[[:space:]]*Percent of CPU this job got: //p' "$err")"
[[ -n "$rate" && -n "$rss_kib" ]] || { cat "$out" "$err" >&2; log "could not read the figures"; exit 1; }
size_db="$(du -m "$DB" | cut -f1)"
size_out="$(du -sm "$DATA" | cut -f1)"

row() { printf '%-44s %12s  %s\n' "$1" "$2" "$3"; }
echo "Gatehouse import benchmark — $(nproc) cores, Synapse $SYNAPSE_VERSION schema, $users users${batch[*]:+, ${batch[*]}}"
echo "binary: $BIN"
echo "$summary"
echo
row "figure" "value" "goal / ratio"
row "import users/s (${tokens[*]:-without tokens})" "$rate" \
  "$(awk -v r="$rate" -v g="$GOAL_USERS_PER_S" 'BEGIN { printf "%.2f× goal (goal ≥ %d)", r / g, g }')"
row "import wall time s" "$wall" "CPU $cpu_pct (100% = one core)"
row "peak RSS MiB" "$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')" \
  "of which anonymous ≈ $(awk -v k="$anon_peak" 'BEGIN { printf "%.0f", k / 1024 }') MiB (sampled); the rest is the mapped Synapse file"
row "Synapse database / Gatehouse data MiB" "$size_db / $size_out" ""
