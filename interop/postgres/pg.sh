#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for tests and benchmarks.
#
#   pg.sh install               Debian's postgresql, when initdb is missing
#   pg.sh start DIR PORT        a new cluster in DIR (must not exist), on
#                               127.0.0.1:PORT; prints POSTGRES_URL=…
#   pg.sh stop DIR              stops it (the directory stays; rm -rf it)
#   pg.sh watch PID DIR         in the background: once process PID has
#                               ended, stops the cluster and removes DIR
#                               (a test binary's own cluster)
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the
# `postgres` user Debian's package creates, in a directory it owns. Trust
# authentication on loopback only; fsync off (a throwaway cluster: its
# durability is not what is measured or tested here) unless PG_DURABLE=1
# (benchmarks comparing it with SQLite's fsync per commit).
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] && { echo "$d"; return; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
  die "no initdb: run '$0 install'"
}

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  install)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
      echo "== installing postgresql"
      if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    ;;
  start)
    [[ $# -eq 3 ]] || die "usage: $0 start DIR PORT"
    dir="$2" port="$3" bin="$(bin_dir)"
    durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [[ "${PG_DURABLE:-0}" == 1 ]] && durability="-c shared_buffers=512MB"
    [[ -e "$dir" ]] && die "$dir exists"
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres: "$dir"
      # The postgres user must reach DIR (mktemp's directories are 0700).
      chmod a+x "$(dirname "$dir")"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U gatehouse -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || die "initdb failed: $(cat "$dir/initdb.log")"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $durability -c max_connections=200" \
      start >/dev/null || die "start failed: $(tail -20 "$dir/server.log")"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U gatehouse gatehouse
    echo "POSTGRES_URL=postgres://gatehouse@127.0.0.1:$port/gatehouse"
    ;;
  stop)
    [[ $# -eq 2 ]] || die "usage: $0 stop DIR"
    as_owner "$(bin_dir)/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  watch)
    [[ $# -eq 3 ]] || die "usage: $0 watch PID DIR"
    pid="$2" dir="$3" self="$0"
    (
      while kill -0 "$pid" 2>/dev/null; do sleep 1; done
      "$self" stop "$dir"
      rm -rf "$dir"
    ) </dev/null >/dev/null 2>&1 &
    disown
    ;;
  *)
    die "usage: $0 install | start DIR PORT | stop DIR | watch PID DIR"
    ;;
esac
