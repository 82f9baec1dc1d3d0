#!/usr/bin/env bash
# A real Synapse homeserver on loopback, for the client SDK's integration tests.
#
#   synapse.sh install
#   synapse.sh start DIR PORT [SMTP_PORT]    -> prints SYNAPSE_URL=http://127.0.0.1:PORT
#   synapse.sh start-delegated DIR PORT AUTH_URL SECRET_FILE [PUBLIC_BASEURL]
#                                            -> same, auth delegated to AUTH_URL
#   synapse.sh stop DIR
#   synapse.sh create-user DIR USER PASSWORD [EMAIL]   -> prints the user ID
#   synapse.sh create-token DIR [USES]                 -> prints the registration token
#   synapse.sh url DIR                                 -> prints the base URL
#
# Only `start`/`start-delegated` write to stdout (one line, SYNAPSE_URL=…), and
# the helpers print exactly their result; all progress and diagnostics go to
# stderr. create-user and create-token need the password/registration API, so
# they refuse a DIR started with start-delegated (users come from the auth
# service there).
#
# Environment:
#   GATEHOUSE_SYNAPSE_VENV     venv to use/create (default $HOME/.cache/gatehouse-synapse-venv)
#   GATEHOUSE_SYNAPSE_PYTHON   interpreter that creates the venv (default python3, >= 3.10)
#   GATEHOUSE_SYNAPSE_TIMEOUT  seconds to wait for /versions at start (default 60)
#   GATEHOUSE_SYNAPSE_EXTRA_CONFIG  a YAML file loaded after overrides.yaml at start
#                              (its top-level keys win), e.g. for a low rc_login or
#                              registration_requires_token: true
#
# See README.md beside this file for the settings and why each is there.
set -euo pipefail

SYNAPSE_VERSION=1.163.2
VENV="${GATEHOUSE_SYNAPSE_VENV:-$HOME/.cache/gatehouse-synapse-venv}"
PY="$VENV/bin/python"
ADMIN_USER=admin
ADMIN_PASSWORD=admin-password

log() { echo "synapse.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Synapse, and psycopg2 for its PostgreSQL support (synapse_port_db builds
# the PostgreSQL Synapse that `gatehouse import synapse` is tested on).
installed() {
  [[ -x "$PY" ]] && "$PY" -c "import synapse, psycopg2, sys; sys.exit(synapse.__version__ != '$SYNAPSE_VERSION')" >/dev/null 2>&1
}

cmd_install() {
  if installed; then
    return 0
  fi
  local base="${GATEHOUSE_SYNAPSE_PYTHON:-python3}"
  command -v "$base" >/dev/null 2>&1 || die "no $base to create the venv with"
  if [[ ! -x "$PY" ]]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$base" -m venv "$VENV" >&2
  fi
  log "installing matrix-synapse==$SYNAPSE_VERSION into $VENV (about a minute)"
  "$PY" -m pip install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" "psycopg2-binary==2.9.13" >&2
  installed || die "matrix-synapse $SYNAPSE_VERSION still not importable from $VENV"
}

# The base URL a started DIR serves, from DIR/synapse.url.
url_of() {
  local dir="$1"
  [[ -f "$dir/synapse.url" ]] || die "$dir/synapse.url missing: was '$0 start $dir PORT' run?"
  cat "$dir/synapse.url"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# write_overrides DIR PORT SMTP_PORT SECRET [AUTH_URL SECRET_FILE PUBLIC_BASEURL]
# With AUTH_URL, Synapse delegates authentication to it (the
# matrix_authentication_service contract) and gets none of its own login,
# registration, refresh or login-token settings, which it refuses in that mode.
write_overrides() {
  local dir="$1" port="$2" smtp_port="$3" secret="$4"
  local auth_url="${5:-}" secret_file="${6:-}" public_baseurl="${7:-http://127.0.0.1:$2/}"
  local tmp="$dir/overrides.yaml.tmp" x_forwarded=false
  [[ -n "$auth_url" ]] && x_forwarded=true
  umask 077
  cat >"$tmp" <<EOF
# Written by interop/synapse/synapse.sh; loaded after homeserver.yaml, so every
# top-level key here replaces the generated one. See interop/synapse/README.md.
server_name: localhost
public_baseurl: $public_baseurl
pid_file: $dir/homeserver.pid
log_config: $dir/log.config
media_store_path: $dir/media_store
signing_key_path: $dir/localhost.signing.key
database:
  name: sqlite3
  args:
    database: $dir/homeserver.db

# One plain-HTTP listener on IPv4 loopback only: client API + admin API, no
# federation resource, no TLS. (x_forwarded only when delegating: that stack
# has nginx in front, which sets X-Forwarded-For.)
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: $x_forwarded
    resources:
      - names: [client]
        compress: false
EOF
  if [[ -z "$auth_url" ]]; then
    cat >>"$tmp" <<EOF

# Registration open without a token or 3PID: flows [m.login.dummy]
# (and [m.login.email.identity] when email is configured).
enable_registration: true
enable_registration_without_verification: true
registration_requires_token: false
registration_shared_secret: "$secret"

# Refresh tokens on (a short lifetime so tests can watch access tokens expire).
refreshable_access_token_lifetime: 10s

# POST /_matrix/client/v1/login/get_token and get_login_token in GET /login.
login_via_existing_session:
  enabled: true
  require_ui_auth: true
  token_timeout: 5m
EOF
  else
    cat >>"$tmp" <<EOF

# Authentication delegated to Gatehouse (Synapse's MAS contract): Synapse
# introspects every access token at $auth_url/oauth2/introspect, and the
# auth service provisions users and devices through /_synapse/mas/* on the
# listener above; both sides use the shared secret in the file below. Synapse
# refuses enable_registration, password_config.enabled,
# refreshable_access_token_lifetime, login_via_existing_session,
# enable_3pid_changes, captcha and user_consent in this mode: none is set here
# or in the generated homeserver.yaml.
matrix_authentication_service:
  enabled: true
  endpoint: "$auth_url"
  secret_path: "$secret_file"
# /.well-known/matrix/client names public_baseurl, and the auth service's
# issuer and account page (from $auth_url/.well-known/openid-configuration).
serve_client_wellknown: true
EOF
  fi
  cat >>"$tmp" <<EOF

# Run the database's background updates at once rather than in slow steps:
# until one of them has built its index, Synapse 1.163 answers 500 to
# /_synapse/mas/reactivate_user on a new database (its profile upsert needs it).
background_updates:
  sleep_enabled: false

# No network beyond loopback: no phone-home, no key servers, no federation,
# no URL previews, no identity server.
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
url_preview_enabled: false
enable_metrics: false
allow_public_rooms_over_federation: false

# Rate limits out of the way of a test suite.
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_registration_token_validity: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_admin_redaction: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_joins_per_room: {per_second: 1000, burst_count: 1000}
rc_3pid_validation: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_media_create: {per_second: 1000, burst_count: 1000}
rc_delayed_event_mgmt: {per_second: 1000, burst_count: 1000}
rc_key_requests: {per_second: 1000, burst_count: 1000}
rc_third_party_invite: {per_second: 1000, burst_count: 1000}
rc_presence:
  per_user: {per_second: 1000, burst_count: 1000}
rc_room_creation: {per_second: 1000, burst_count: 1000}
rc_reports: {per_second: 1000, burst_count: 1000}
rc_user_directory: {per_second: 1000, burst_count: 1000}
rc_profile: {per_second: 1000, burst_count: 1000}
EOF
  if [[ -n "$smtp_port" ]]; then
    cat >>"$tmp" <<EOF

# Email to a local SMTP server in plain text (no STARTTLS, no TLS).
email:
  smtp_host: 127.0.0.1
  smtp_port: $smtp_port
  force_tls: false
  require_transport_security: false
  enable_tls: false
  notif_from: "Synapse <noreply@localhost>"
  app_name: Gatehouse interop
  client_base_url: http://127.0.0.1:$port
  enable_notifs: false
  validation_token_lifetime: 1h
EOF
  fi
  mv "$tmp" "$dir/overrides.yaml"
}

write_log_config() {
  local dir="$1"
  cat >"$dir/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
}

cmd_start() {
  [[ $# -ge 2 && $# -le 3 ]] || usage
  local dir="$1" port="$2" smtp_port="${3:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  [[ -z "$smtp_port" || "$smtp_port" =~ ^[0-9]+$ ]] || die "SMTP_PORT must be a number, got '$smtp_port'"
  start_synapse "$dir" "$port" "$smtp_port"
}

# start-delegated DIR PORT AUTH_URL SECRET_FILE [PUBLIC_BASEURL]: Synapse
# delegating all authentication to the service at AUTH_URL (Gatehouse).
# Neither needs the other to be up first: Synapse contacts AUTH_URL lazily.
# Running it again on the same DIR (after stop) restarts the same Synapse on
# the same data.
cmd_start_delegated() {
  [[ $# -ge 4 && $# -le 5 ]] || usage
  local dir="$1" port="$2" auth_url="$3" secret_file="$4" public_baseurl="${5:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  [[ "$auth_url" =~ ^https?://[^[:space:]\"]+$ ]] || die "AUTH_URL must be an http(s) URL, got '$auth_url'"
  [[ -z "$public_baseurl" || "$public_baseurl" =~ ^https?://[^[:space:]]+/$ ]] \
    || die "PUBLIC_BASEURL must be an http(s) URL ending in /, got '$public_baseurl'"
  [[ -f "$secret_file" && -r "$secret_file" ]] || die "SECRET_FILE $secret_file is not a readable file"
  secret_file="$(cd "$(dirname "$secret_file")" && pwd)/$(basename "$secret_file")"
  start_synapse "$dir" "$port" "" "$auth_url" "$secret_file" "$public_baseurl"
}

# start_synapse DIR PORT SMTP_PORT [AUTH_URL SECRET_FILE PUBLIC_BASEURL]
start_synapse() {
  local dir="$1" port="$2" smtp_port="$3"
  local auth_url="${4:-}" secret_file="${5:-}" public_baseurl="${6:-}"
  local base="http://127.0.0.1:$port"
  local timeout="${GATEHOUSE_SYNAPSE_TIMEOUT:-60}"

  cmd_install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"

  if [[ -f "$dir/synapse.pid" ]] && pid_alive "$(cat "$dir/synapse.pid")"; then
    die "a Synapse is already running from $dir (pid $(cat "$dir/synapse.pid")); '$0 stop $dir' first"
  fi
  if curl -s -o /dev/null --max-time 2 "$base/" 2>/dev/null; then
    die "something already answers on 127.0.0.1:$port"
  fi

  # Generated once per DIR (server keys, macaroon and form secrets, signing key);
  # a later start on the same DIR reuses it with its database.
  if [[ ! -f "$dir/homeserver.yaml" ]]; then
    log "generating config in $dir"
    (cd "$dir" && "$PY" -m synapse.app.homeserver \
      --generate-config \
      --server-name localhost \
      --config-path "$dir/homeserver.yaml" \
      --data-directory "$dir" \
      --report-stats=no >&2)
  fi

  local secret
  if [[ -f "$dir/registration_shared_secret" ]]; then
    secret="$(cat "$dir/registration_shared_secret")"
  else
    secret="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
    (umask 077 && echo "$secret" >"$dir/registration_shared_secret")
  fi
  write_log_config "$dir"
  if [[ -n "$auth_url" ]]; then
    write_overrides "$dir" "$port" "" "$secret" "$auth_url" "$secret_file" "${public_baseurl:-$base/}"
    echo delegated >"$dir/synapse.mode"
  else
    write_overrides "$dir" "$port" "$smtp_port" "$secret"
    echo standalone >"$dir/synapse.mode"
  fi
  echo "$base" >"$dir/synapse.url"
  rm -f "$dir/admin.token"

  local -a configs=(--config-path "$dir/homeserver.yaml" --config-path "$dir/overrides.yaml")
  if [[ -n "${GATEHOUSE_SYNAPSE_EXTRA_CONFIG:-}" ]]; then
    [[ -f "$GATEHOUSE_SYNAPSE_EXTRA_CONFIG" ]] || die "no file $GATEHOUSE_SYNAPSE_EXTRA_CONFIG"
    cp "$GATEHOUSE_SYNAPSE_EXTRA_CONFIG" "$dir/extra.yaml"
    configs+=(--config-path "$dir/extra.yaml")
    log "with extra config $GATEHOUSE_SYNAPSE_EXTRA_CONFIG"
  else
    rm -f "$dir/extra.yaml"
  fi

  log "starting Synapse $SYNAPSE_VERSION on $base${auth_url:+, delegating auth to $auth_url} (log: $dir/homeserver.log)"
  local t0=$SECONDS t0ms
  t0ms=$(date +%s%3N)
  (cd "$dir" && exec "$PY" -m synapse.app.homeserver "${configs[@]}" \
      </dev/null >"$dir/synapse.stdout.log" 2>&1) &
  local pid=$!
  echo "$pid" >"$dir/synapse.pid"

  local status=000
  while (( SECONDS - t0 < timeout )); do
    if ! pid_alive "$pid"; then
      log "Synapse exited during start-up"
      tail -n 40 "$dir/synapse.stdout.log" >&2 || true
      tail -n 60 "$dir/homeserver.log" >&2 2>/dev/null || true
      rm -f "$dir/synapse.pid"
      exit 1
    fi
    status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/_matrix/client/versions" 2>/dev/null || true)"
    [[ "$status" == 200 ]] && break
    sleep 0.25
  done
  if [[ "$status" != 200 ]]; then
    log "no 200 from $base/_matrix/client/versions within ${timeout}s (last status $status)"
    tail -n 40 "$dir/synapse.stdout.log" >&2 || true
    tail -n 60 "$dir/homeserver.log" >&2 2>/dev/null || true
    cmd_stop "$dir" || true
    exit 1
  fi
  log "Synapse answered /versions after $(( $(date +%s%3N) - t0ms )) ms (pid $pid)"

  if [[ -n "$auth_url" ]]; then
    # No admin user here: Synapse has no password or registration API in this
    # mode. Admins are the auth service's (`gatehouse user create --admin`).
    echo "SYNAPSE_URL=$base"
    return 0
  fi

  # The admin user; on a reused DIR it already exists.
  local out
  if out="$("$VENV/bin/register_new_matrix_user" \
        -c "$dir/overrides.yaml" -u "$ADMIN_USER" -p "$ADMIN_PASSWORD" --admin "$base" 2>&1)"; then
    log "admin user @$ADMIN_USER:localhost created"
  elif grep -q "User ID already taken" <<<"$out"; then
    log "admin user @$ADMIN_USER:localhost already exists"
  else
    echo "$out" >&2
    cmd_stop "$dir" || true
    die "could not create the admin user"
  fi

  echo "SYNAPSE_URL=$base"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local dir="$1" pid
  if [[ ! -f "$dir/synapse.pid" ]]; then
    log "no $dir/synapse.pid: nothing to stop"
    return 0
  fi
  pid="$(cat "$dir/synapse.pid")"
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      log "pid $pid still running after 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
      done
    fi
    pid_alive "$pid" && die "pid $pid did not exit"
    log "stopped Synapse (pid $pid)"
  else
    log "pid $pid was not running"
  fi
  rm -f "$dir/synapse.pid" "$dir/admin.token"
}

# HTTP + JSON through the venv's Python (no jq needed). Prints the response
# body on success; on a non-2xx status prints it to stderr and fails.
#   http METHOD URL [JSON_BODY] [BEARER]
http() {
  "$PY" - "$@" <<'PY'
import json, sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
token = sys.argv[4] if len(sys.argv) > 4 else None
req = urllib.request.Request(url, method=method,
                             data=body.encode() if body is not None else None)
req.add_header("Content-Type", "application/json")
if token:
    req.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stderr.write(f"{method} {url} -> {e.code}: {e.read().decode()}\n")
    sys.exit(1)
PY
}

json_get() { "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

json_str() { "$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# The helpers below log in and create users and tokens with Synapse's own
# password and registration APIs, which a delegating Synapse does not have.
refuse_delegated() {
  if [[ "$(cat "$1/synapse.mode" 2>/dev/null)" == delegated ]]; then
    die "$1 runs a Synapse that delegates authentication: use the auth service (e.g. \`gatehouse user create\`, \`gatehouse registration-token create\`)"
  fi
}

# The admin's access token, from a password login, cached in DIR/admin.token
# (until the next start/stop) so helper calls don't pile up devices.
admin_token() {
  local dir="$1" base token
  base="$(url_of "$dir")"
  if [[ -f "$dir/admin.token" ]]; then
    token="$(cat "$dir/admin.token")"
    if http GET "$base/_matrix/client/v3/account/whoami" "" "$token" >/dev/null 2>&1; then
      echo "$token"
      return 0
    fi
  fi
  token="$(http POST "$base/_matrix/client/v3/login" \
    "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$ADMIN_USER\"},\"password\":\"$ADMIN_PASSWORD\",\"initial_device_display_name\":\"synapse.sh admin\"}" \
    | json_get access_token)" || die "admin login failed"
  (umask 077 && echo "$token" >"$dir/admin.token")
  echo "$token"
}

cmd_create_user() {
  [[ $# -ge 3 && $# -le 4 ]] || usage
  local dir="$1" user="$2" password="$3" email="${4:-}" base token user_id body
  refuse_delegated "$dir"
  base="$(url_of "$dir")"
  token="$(admin_token "$dir")"
  if [[ "$user" == @* ]]; then user_id="$user"; else user_id="@$user:localhost"; fi
  body="{\"password\":$(json_str "$password"),\"admin\":false,\"deactivated\":false"
  if [[ -n "$email" ]]; then
    body+=",\"threepids\":[{\"medium\":\"email\",\"address\":$(json_str "$email")}]"
  fi
  body+="}"
  local quoted
  quoted="$("$PY" -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$user_id")"
  http PUT "$base/_synapse/admin/v2/users/$quoted" "$body" "$token" >/dev/null \
    || die "creating $user_id failed"
  echo "$user_id"
}

cmd_create_token() {
  [[ $# -ge 1 && $# -le 2 ]] || usage
  local dir="$1" uses="${2:-}" base token body='{}'
  refuse_delegated "$dir"
  if [[ -n "$uses" ]]; then
    [[ "$uses" =~ ^[0-9]+$ ]] || die "USES must be a number, got '$uses'"
    body="{\"uses_allowed\":$uses}"
  fi
  base="$(url_of "$dir")"
  token="$(admin_token "$dir")"
  http POST "$base/_synapse/admin/v1/registration_tokens/new" "$body" "$token" \
    | json_get token || die "creating a registration token failed"
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd="$1"
  shift
  case "$cmd" in
    install) [[ $# -eq 0 ]] || usage; cmd_install ;;
    start) cmd_start "$@" ;;
    start-delegated) cmd_start_delegated "$@" ;;
    stop) cmd_stop "$@" ;;
    create-user) cmd_create_user "$@" ;;
    create-token) cmd_create_token "$@" ;;
    url) [[ $# -eq 1 ]] || usage; url_of "$1" ;;
    -h | --help | help) usage ;;
    *) log "unknown command '$cmd'"; usage ;;
  esac
}

main "$@"
