#!/usr/bin/env bash
# matrix-js-sdk interop tests against a real Gatehouse binary.
#
#   interop/js/run.sh [extra node --test arguments]
#
# Needs Node >= 20 and npm. Uses the already-built binary $GATEHOUSE_BIN,
# default ${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}/debug/gatehouse;
# it never builds it. Installs the pinned dependencies with `npm ci` when
# node_modules is missing or older than package.json / package-lock.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

export GATEHOUSE_BIN="${GATEHOUSE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}/debug/gatehouse}"
if [[ ! -x "$GATEHOUSE_BIN" ]]; then
  echo "run.sh: no gatehouse binary at $GATEHOUSE_BIN (build it first, or set GATEHOUSE_BIN)" >&2
  exit 1
fi

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: $tool is needed (Node >= 20)" >&2
    exit 1
  fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "run.sh: Node >= 20 is needed, found $(node --version)" >&2
  exit 1
fi

# node_modules is current when it was installed from exactly these manifests.
stamp=node_modules/.interop-install-stamp
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [[ ! -d node_modules || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "run.sh: installing dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

exec node --test --test-timeout=120000 "$@" test/*.test.js
