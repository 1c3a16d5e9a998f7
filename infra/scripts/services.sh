#!/usr/bin/env bash
# Private PostgreSQL and Redis for tests and development, each in a folder of its own.
#
#   services.sh start DIR [--persist]   start (or resume) both; print `export VAR=...` lines
#   services.sh stop DIR [--keep]       stop both; remove DIR unless --keep
#   services.sh env DIR                 print the `export VAR=...` lines of a running DIR
#   services.sh status DIR              exit 0 when both answer
#
# Usage in a shell:  eval "$(infra/scripts/services.sh start /tmp/nimbus-svc)"
# DIR/env holds the same lines (`export NAME=value`, readable by bash `source` and by GNU make
# `include`):
#   NIMBUS_TEST_DATABASE_URL  superuser URL of the cluster's `postgres` database (testkit creates
#                             its template and one database per test from it)
#   NIMBUS_TEST_REDIS_URL     Redis URL (logical database 0; testkit isolates tests by key prefix)
#   NIMBUS_TEST_APP_DATABASE_URL  the runtime role `nimbus_app` on the `postgres` database (testkit
#                             connects it to each test's database for the API and the workers)
#   NIMBUS_DATABASE_URL       URL of the `nimbus` database as its owner, created on first start
#                             (for `make dev`: migrations)
#   NIMBUS_APP_DATABASE_URL   the `nimbus` database as `nimbus_app` (for `make dev`: the API and the
#                             workers; README "Database roles")
#   NIMBUS_REDIS_URL          same server as NIMBUS_TEST_REDIS_URL
#
# NIMBUS_PG_EXTRA_OPTS adds PostgreSQL options at start, e.g. for a benchmark's diagnosis:
#   NIMBUS_PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements"
#
# Tests use the default: fsync off, Redis without persistence, DIR removed by `stop`.
# `make dev` uses DIR=.dev with --persist (fsync on, Redis append-only file) and `stop --keep`;
# `start` on an existing DIR resumes the same cluster, data and ports (a new port only when the
# old one has been taken meanwhile).
#
# PostgreSQL refuses to run as root, so as root its files belong to the `postgres` user (or
# `nobody`) and its commands run through `runuser`.
set -euo pipefail

die() { echo "services.sh: $*" >&2; exit 1; }
log() { echo "services.sh: $*" >&2; }

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd="$1"
dir_arg="$2"
shift 2
persist=0
keep=0
for opt in "$@"; do
  case "$opt" in
    --persist) persist=1 ;;
    --keep) keep=1 ;;
    *) usage ;;
  esac
done

mkdir_abs() { mkdir -p "$1" && (cd "$1" && pwd -P); }
abs_dir() {
  if [ -d "$1" ]; then (cd "$1" && pwd -P); else
    local parent
    parent="$(cd "$(dirname "$1")" 2>/dev/null && pwd -P)" || return 1
    echo "$parent/$(basename "$1")"
  fi
}

find_pg_bin() {
  local name="$1" d
  for d in /usr/local/bin /usr/lib/postgresql/*/bin; do
    if [ -x "$d/$name" ]; then echo "$d/$name"; return 0; fi
  done
  command -v "$name" || die "$name not found: install PostgreSQL (apt-get install postgresql)"
}

# The user PostgreSQL runs as, and the prefix that runs a command as that user.
pg_user=""
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then pg_user=postgres; else pg_user=nobody; fi
  as_pg=(runuser -u "$pg_user" --)
fi

port_free() {
  # Nothing accepts a connection there (bash's /dev/tcp; no extra tools needed).
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  local p
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    return
  fi
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  die "no free port found"
}

read_saved() { # read_saved FILE -> the first line, or nothing
  [ -f "$1" ] && head -n1 "$1" || true
}

pg_running() { # pg_running DIR
  [ -f "$1/postgres/data/postmaster.pid" ] || return 1
  "${as_pg[@]}" "$(find_pg_bin pg_ctl)" -D "$1/postgres/data" status >/dev/null 2>&1
}

redis_running() { # redis_running DIR
  local port
  port="$(read_saved "$1/redis.port")"
  [ -n "$port" ] || return 1
  [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
}

psql_cmd() { # psql_cmd DIR SQL...
  local port
  port="$(read_saved "$1/postgres.port")"
  "${as_pg[@]}" "$(find_pg_bin psql)" -X -q -h "$1/postgres" -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -tA -c "$2"
}

write_env() { # write_env DIR
  local d="$1" pg_port redis_port app
  pg_port="$(read_saved "$d/postgres.port")"
  redis_port="$(read_saved "$d/redis.port")"
  app="nimbus_app:$(read_saved "$d/postgres/app.password")"
  cat >"$d/env.tmp" <<EOF
export NIMBUS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
export NIMBUS_TEST_APP_DATABASE_URL=postgres://$app@127.0.0.1:$pg_port/postgres
export NIMBUS_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
export NIMBUS_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/nimbus
export NIMBUS_APP_DATABASE_URL=postgres://$app@127.0.0.1:$pg_port/nimbus
export NIMBUS_REDIS_URL=redis://127.0.0.1:$redis_port/0
EOF
  mv "$d/env.tmp" "$d/env"
}

# The runtime role (README "Database roles"): it logs in with a password kept in DIR, and the
# migration 20261206000001_app_role.sql grants it row access in every migrated database. Roles are
# cluster-wide, so one role serves `nimbus`, the test template and every test database.
ensure_app_role() { # ensure_app_role DIR
  local d="$1" pw
  pw="$(read_saved "$d/postgres/app.password")"
  if [ -z "$pw" ]; then
    pw="$(tr -d - </proc/sys/kernel/random/uuid)"
    (umask 077 && echo "$pw" >"$d/postgres/app.password")
  fi
  if [ "$(psql_cmd "$d" "select 1 from pg_roles where rolname = 'nimbus_app'")" = "1" ]; then
    psql_cmd "$d" "alter role nimbus_app login password '$pw'" >/dev/null
  else
    psql_cmd "$d" "create role nimbus_app login password '$pw'" >/dev/null
  fi
}

start_postgres() { # start_postgres DIR
  local d="$1" data="$1/postgres/data" port
  if pg_running "$d"; then return 0; fi
  mkdir -p "$d/postgres"
  [ -n "$pg_user" ] && chown "$pg_user" "$d/postgres"
  chmod 700 "$d/postgres"
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    "${as_pg[@]}" "$(find_pg_bin initdb)" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
      --locale=C.UTF-8 --no-sync >"$d/postgres/initdb.log" 2>&1 \
      || { cat "$d/postgres/initdb.log" >&2; die "initdb failed"; }
  fi
  port="$(read_saved "$d/postgres.port")"
  if [ -z "$port" ] || ! port_free "$port"; then port="$(free_port)"; fi
  echo "$port" >"$d/postgres.port"
  local opts="-p $port -k $d/postgres -c listen_addresses=127.0.0.1 -c max_connections=400"
  opts="$opts -c shared_buffers=64MB ${NIMBUS_PG_EXTRA_OPTS:-}"
  if [ "$persist" -eq 0 ]; then
    # Tests: durability is worthless there, speed is not.
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  if ! "${as_pg[@]}" "$(find_pg_bin pg_ctl)" -D "$data" -l "$d/postgres/server.log" -w -t 30 \
    -o "$opts" start >/dev/null; then
    tail -n 20 "$d/postgres/server.log" >&2 || true
    die "PostgreSQL did not start"
  fi
  if [ "$(psql_cmd "$d" "select 1 from pg_database where datname = 'nimbus'")" != "1" ]; then
    psql_cmd "$d" "create database nimbus" >/dev/null
  fi
}

start_redis() { # start_redis DIR
  local d="$1" port
  if redis_running "$d"; then return 0; fi
  command -v redis-server >/dev/null || die "redis-server not found: apt-get install redis-server"
  mkdir -p "$d/redis"
  local durability=(--save "" --appendonly no)
  [ "$persist" -eq 1 ] && durability=(--save "" --appendonly yes --appendfsync everysec)
  for _ in 1 2 3 4 5; do
    port="$(read_saved "$d/redis.port")"
    if [ -z "$port" ] || ! port_free "$port"; then port="$(free_port)"; fi
    echo "$port" >"$d/redis.port"
    rm -f "$d/redis/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 "${durability[@]}" --daemonize yes \
      --dir "$d/redis" --pidfile "$d/redis/redis.pid" --logfile "$d/redis/redis.log" >/dev/null
    for _ in $(seq 1 100); do
      if redis_running "$d"; then return 0; fi
      sleep 0.02
    done
    # Another process took the port between the check and the bind: try another one.
    rm -f "$d/redis.port"
  done
  tail -n 20 "$d/redis/redis.log" >&2 || true
  die "Redis did not start"
}

stop_postgres() { # stop_postgres DIR
  local d="$1"
  [ -f "$d/postgres/data/postmaster.pid" ] || return 0
  "${as_pg[@]}" "$(find_pg_bin pg_ctl)" -D "$d/postgres/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

stop_redis() { # stop_redis DIR
  local d="$1" port pid
  port="$(read_saved "$d/redis.port")"
  if [ -n "$port" ] && redis_running "$d"; then
    redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
  fi
  pid="$(read_saved "$d/redis/redis.pid")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$d/redis/redis.pid"
}

case "$cmd" in
  start)
    existed=0
    [ -d "$dir_arg" ] && existed=1
    d="$(mkdir_abs "$dir_arg")" || die "cannot create $dir_arg"
    # Unix socket paths are limited to 107 bytes.
    [ ${#d} -le 80 ] || die "DIR path too long for a unix socket: $d"
    if [ -n "$pg_user" ]; then
      # The server runs as $pg_user and must reach its folder.
      chmod o+x "$d"
    fi
    on_failure() {
      trap - EXIT
      log "start failed; stopping what was started"
      stop_redis "$d"
      stop_postgres "$d"
      if [ "$existed" -eq 0 ]; then rm -rf "$d"; fi
    }
    trap on_failure EXIT
    start_postgres "$d"
    ensure_app_role "$d"
    start_redis "$d"
    trap - EXIT
    write_env "$d"
    cat "$d/env"
    ;;
  stop)
    d="$(abs_dir "$dir_arg")" || exit 0
    [ -d "$d" ] || exit 0
    stop_redis "$d"
    stop_postgres "$d"
    if [ "$keep" -eq 0 ]; then rm -rf "$d"; fi
    ;;
  env)
    d="$(abs_dir "$dir_arg")" || die "no such folder: $dir_arg"
    [ -f "$d/env" ] || die "no services in $d: run '$0 start $dir_arg' first"
    cat "$d/env"
    ;;
  status)
    d="$(abs_dir "$dir_arg")" || exit 1
    pg_running "$d" && redis_running "$d"
    ;;
  *) usage ;;
esac
