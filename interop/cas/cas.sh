#!/usr/bin/env bash
# A real CAS 3.0 server on loopback (django-cas-server), for Gatehouse's SSO tests.
#
#   cas.sh install             the pinned django-cas-server in its venv (quick when present)
#   cas.sh start DIR PORT      a Django project in DIR, served on 127.0.0.1:PORT;
#                              prints CAS_URL=http://127.0.0.1:PORT/cas
#   cas.sh stop DIR            stops it (DIR stays; rm -rf it)
#   cas.sh url DIR             prints the CAS base URL of a started DIR
#
# Endpoints hang from CAS_URL: /login, /logout, /validate, /serviceValidate,
# /p3/serviceValidate. Users (Django users, checked by CAS_AUTH_CLASS'
# default): alice / alice-pw (alice@example.org, Alice Liddell) and
# dave / dave-pw (dave@example.org, Dave Bowman). Any service URL on
# http://127.0.0.1 or http://localhost (any port) is allowed, and gets the
# attributes email, first_name, last_name and username.
#
# Only `start` and `url` write to stdout; progress and diagnostics go to stderr.
#
# Environment:
#   GATEHOUSE_CAS_VENV     venv to use/create (default $HOME/.cache/gatehouse-cas-venv)
#   GATEHOUSE_CAS_PYTHON   interpreter that creates the venv (default python3, >= 3.10)
#   GATEHOUSE_CAS_TIMEOUT  seconds to wait for the login page at start (default 30)
#
# See README.md beside this file.
set -euo pipefail

CAS_VERSION=3.1.0
# django-cas-server and everything it pulls in, pinned (Django < 5.3 is its bound).
PACKAGES=(
  "django-cas-server==$CAS_VERSION"
  "Django==5.2.19"
  "asgiref==3.13.0"
  "sqlparse==0.6.1"
  "lxml==6.1.3"
  "requests==2.34.2"
  "requests-futures==1.1.0"
  "certifi==2026.10.19.post1"
  "charset-normalizer==3.5.3"
  "idna==3.20"
  "urllib3==2.8.0"
)
VENV="${GATEHOUSE_CAS_VENV:-$HOME/.cache/gatehouse-cas-venv}"
PY="$VENV/bin/python"

log() { echo "cas.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

installed() {
  [[ -x "$PY" ]] && "$PY" -c "import sys, cas_server; sys.exit(cas_server.VERSION != '$CAS_VERSION')" >/dev/null 2>&1
}

cmd_install() {
  installed && return 0
  local base="${GATEHOUSE_CAS_PYTHON:-python3}"
  command -v "$base" >/dev/null 2>&1 || die "no $base to create the venv with"
  if [[ ! -x "$PY" ]]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$base" -m venv "$VENV" >&2
  fi
  log "installing django-cas-server==$CAS_VERSION into $VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
  installed || die "django-cas-server $CAS_VERSION still not importable from $VENV"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# write_project DIR PORT: the Django project, rewritten at every start (the
# secret key and the database stay).
write_project() {
  local dir="$1" port="$2"
  mkdir -p "$dir/gatehouse_cas"
  if [[ ! -f "$dir/secret_key" ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$dir/secret_key")
  fi

  cat >"$dir/manage.py" <<'EOF'
#!/usr/bin/env python
# Written by interop/cas/cas.sh.
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse_cas.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
EOF
  : >"$dir/gatehouse_cas/__init__.py"

  cat >"$dir/gatehouse_cas/urls.py" <<'EOF'
# Written by interop/cas/cas.sh: the CAS endpoints under /cas/.
from django.urls import include, path

urlpatterns = [
    path("cas/", include("cas_server.urls", namespace="cas_server")),
]
EOF

  cat >"$dir/gatehouse_cas/settings.py" <<EOF
# Written by interop/cas/cas.sh: a throwaway CAS server for tests, plain HTTP
# on loopback only. See interop/cas/README.md.
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = (DIR / "secret_key").read_text().strip()
# Off: errors are logged to stderr (cas.log), not shown as debug pages.
# runserver --insecure still serves the package's stylesheet.
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:$port", "http://localhost:$port"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "cas_server",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "gatehouse_cas.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DIR / "cas.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LANGUAGE_CODE = "en-us"
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "/static/"

# Plain HTTP: no Secure cookies (the defaults, said out loud).
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"cas_server": {"handlers": ["stderr"], "level": "INFO"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}

# CAS: Django's own users (the default auth class, named here to be plain).
CAS_AUTH_CLASS = "cas_server.auth.DjangoAuthUser"
# The network is closed: no version check against the package index, and the
# pages' CSS/JS components (a CDN by default) are empty data: URLs.
CAS_NEW_VERSION_HTML_WARNING = False
CAS_NEW_VERSION_EMAIL_WARNING = False
CAS_COMPONENT_URLS = {
    "bootstrap3_css": "data:text/css,",
    "bootstrap3_js": "data:text/javascript,",
    "html5shiv": "data:text/javascript,",
    "respond": "data:text/javascript,",
    "bootstrap4_css": "data:text/css,",
    "bootstrap4_js": "data:text/javascript,",
    "jquery": "data:text/javascript,",
}
CAS_SHOW_POWERED = False
EOF

  cat >"$dir/seed.py" <<'EOF'
# Written by interop/cas/cas.sh; run with `manage.py shell`. Idempotent.
from django.contrib.auth import get_user_model
from cas_server.models import ReplaceAttributName, ServicePattern

User = get_user_model()
for username, password, email, first, last in [
    ("alice", "alice-pw", "alice@example.org", "Alice", "Liddell"),
    ("dave", "dave-pw", "dave@example.org", "Dave", "Bowman"),
]:
    user, _ = User.objects.get_or_create(username=username)
    user.email, user.first_name, user.last_name = email, first, last
    user.set_password(password)
    user.save()

# Any service on loopback, by IP or by name, any port and path; not
# http://127.0.0.1.example.com.
pattern, _ = ServicePattern.objects.update_or_create(
    name="loopback",
    defaults={
        "pos": 1,
        "pattern": r"^http://(127\.0\.0\.1|localhost)(:[0-9]+)?([/?#].*)?$",
        "user_field": "",
        "restrict_users": False,
        "proxy": False,
        "proxy_callback": False,
        "single_log_out": False,
    },
)
for name in ["email", "first_name", "last_name", "username"]:
    ReplaceAttributName.objects.get_or_create(name=name, replace="", service_pattern=pattern)
EOF
}

url_of() {
  local dir="$1"
  [[ -f "$dir/cas.url" ]] || die "$dir/cas.url missing: was '$0 start $dir PORT' run?"
  cat "$dir/cas.url"
}

cmd_start() {
  [[ $# -eq 2 ]] || usage
  local dir="$1" port="$2"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  local url="http://127.0.0.1:$port/cas"
  local timeout="${GATEHOUSE_CAS_TIMEOUT:-30}"

  cmd_install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/cas.pid" ]] && pid_alive "$(cat "$dir/cas.pid")"; then
    die "a CAS server is already running from $dir (pid $(cat "$dir/cas.pid")); '$0 stop $dir' first"
  fi
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null; then
    die "something already answers on 127.0.0.1:$port"
  fi

  write_project "$dir" "$port"
  log "migrating $dir/cas.sqlite3"
  (cd "$dir" && "$PY" manage.py migrate --no-input -v 0 >&2)
  (cd "$dir" && "$PY" manage.py shell <seed.py >&2)
  echo "$url" >"$dir/cas.url"

  log "starting django-cas-server $CAS_VERSION on $url (log: $dir/cas.log)"
  # runserver: single process, threads; --insecure serves the static files
  # with DEBUG off; --noreload keeps the pid ours.
  (cd "$dir" && exec "$PY" manage.py runserver --noreload --insecure --skip-checks "127.0.0.1:$port" \
      </dev/null >"$dir/cas.log" 2>&1) &
  local pid=$!
  echo "$pid" >"$dir/cas.pid"

  local t0=$SECONDS status=000
  while (( SECONDS - t0 < timeout )); do
    if ! pid_alive "$pid"; then
      log "the CAS server exited during start-up"
      tail -n 40 "$dir/cas.log" >&2 || true
      rm -f "$dir/cas.pid"
      exit 1
    fi
    status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/login" 2>/dev/null || true)"
    [[ "$status" == 200 ]] && break
    sleep 0.2
  done
  if [[ "$status" != 200 ]]; then
    log "no 200 from $url/login within ${timeout}s (last status $status)"
    tail -n 40 "$dir/cas.log" >&2 || true
    cmd_stop "$dir" || true
    exit 1
  fi
  log "CAS server up (pid $pid)"
  echo "CAS_URL=$url"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local dir="$1" pid i
  if [[ ! -f "$dir/cas.pid" ]]; then
    log "no $dir/cas.pid: nothing to stop"
    return 0
  fi
  pid="$(cat "$dir/cas.pid")"
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      log "pid $pid still running after 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/cas.pid"
  log "stopped"
}

case "${1:-}" in
  install) shift; [[ $# -eq 0 ]] || usage; cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  url) shift; [[ $# -eq 1 ]] || usage; url_of "$1" ;;
  *) usage ;;
esac
