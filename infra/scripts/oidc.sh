#!/usr/bin/env bash
# The development/test OpenID Connect provider (infra/oidc/server.js, npm oidc-provider).
#
#   infra/scripts/oidc.sh start DIR PORT   starts it on 127.0.0.1:PORT (pid and log in DIR), waits for
#                                          its discovery document, prints `export NIMBUS_TEST_OIDC_ISSUER=…`
#   infra/scripts/oidc.sh stop DIR         stops the provider started with DIR
#
# Extra environment passed through: NIMBUS_REDIRECT_URIS, NIMBUS_POST_LOGOUT_URIS, NIMBUS_CLIENT_SECRET,
# OIDC_ACCESS_TOKEN_TTL (see infra/oidc/server.js).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

# Whether pid $1 is a running node process of infra/oidc/server.js.
is_provider() {
  [[ "$1" =~ ^[0-9]+$ ]] && grep -qa "infra/oidc/server\.js" "/proc/$1/cmdline" 2>/dev/null
}

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || usage

case "$cmd" in
  start)
    port="${3:-}"; [ -n "$port" ] || usage
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ ! -d "$root/infra/oidc/node_modules/oidc-provider" ]; then
      echo "infra/oidc/node_modules is missing: run infra/scripts/install-deps.sh" >&2
      exit 1
    fi
    if [ -s "$dir/oidc.pid" ] && is_provider "$(cat "$dir/oidc.pid")"; then
      echo "the provider of $dir is already running (pid $(cat "$dir/oidc.pid"))" >&2
      exit 1
    fi
    issuer="http://127.0.0.1:$port"
    # setsid: a Ctrl-C in the caller's terminal does not reach it; `stop` ends it.
    PORT="$port" OIDC_ISSUER="$issuer" setsid node "$root/infra/oidc/server.js" >"$dir/oidc.log" 2>&1 </dev/null &
    echo $! >"$dir/oidc.pid"
    for _ in $(seq 1 100); do
      if curl -fs "$issuer/.well-known/openid-configuration" >/dev/null 2>&1; then
        echo "export NIMBUS_TEST_OIDC_ISSUER=$issuer"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/oidc.pid")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    cat "$dir/oidc.log" >&2
    echo "the OIDC provider did not start on port $port" >&2
    kill "$(cat "$dir/oidc.pid")" 2>/dev/null || true
    rm -f "$dir/oidc.pid"
    exit 1
    ;;
  stop)
    [ -s "$dir/oidc.pid" ] || exit 0
    pid="$(cat "$dir/oidc.pid")"
    # A pid file can outlive its process (reboot, crash) and the pid be reused: only a process
    # that is our provider is signalled.
    if ! is_provider "$pid"; then
      rm -f "$dir/oidc.pid"
      exit 0
    fi
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/oidc.pid"
    ;;
  *) usage ;;
esac
