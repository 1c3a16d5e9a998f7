#!/usr/bin/env bash
# Browser tests of the portal against the real stack: starts, on free ports and in a temporary
# folder, PostgreSQL + Redis (services.sh), pve-sim, the OIDC provider (oidc.sh), the API serving
# the built SPA and two workers; runs web/tests/e2e.mjs (playwright-core driving the system's
# headless Chromium); stops everything. Screenshots go to $E2E_SCREENSHOTS (default
# target/e2e-screenshots); E2E_UPDATE_DOCS=1 also copies them to docs/screenshots/.
#   infra/scripts/e2e.sh            (builds the binaries and the SPA first; E2E_SKIP_BUILD=1 skips that)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -x "$chromium" ] || { echo "e2e: chromium is missing; run infra/scripts/install-deps.sh" >&2; exit 1; }
[ -d web/node_modules/playwright-core ] || { echo "e2e: web/node_modules is missing; run infra/scripts/install-deps.sh" >&2; exit 1; }

if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
  cargo build -p pve-sim -p nimbus-api -p nimbus-worker --bins
  infra/scripts/build-web.sh
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug"

work="$(mktemp -d /tmp/nimbus-e2e.XXXXXX)"
# Services.sh runs PostgreSQL as an unprivileged user when we are root: it needs to reach the folder.
chmod 755 "$work"
pids=()
cleanup() {
  local rc=$?
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  infra/scripts/oidc.sh stop "$work/oidc" >/dev/null 2>&1 || true
  infra/scripts/services.sh stop "$work/services" >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ] && [ -d "$work" ]; then
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "── $f (last 30 lines)"; tail -30 "$f"; }; done >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup INT TERM EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL, name, log
  for _ in $(seq 1 200); do curl -fsk "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "e2e: $2 did not start" >&2; cat "$3" >&2 || true; return 1
}

eval "$(infra/scripts/services.sh start "$work/services")"

# pve-sim: quick but visible task durations, so the browser sees the steps go by.
pve_port=$(free_port)
pve_token="root@pam!e2e=$(cat /proc/sys/kernel/random/uuid)"
"$bin/pve-sim" --listen "127.0.0.1:$pve_port" --nodes 3 --token "$pve_token" --time-scale 0.2 \
  --guest-boot-seconds 2 --auth-failure-delay-ms 0 >"$work/pve-sim.log" 2>&1 &
pids+=($!)
fingerprint=""
for _ in $(seq 1 100); do
  fingerprint="$(sed -n 's/^certificate fingerprint (SHA-256): //p' "$work/pve-sim.log")"
  [ -n "$fingerprint" ] && break
  sleep 0.1
done
[ -n "$fingerprint" ] || { cat "$work/pve-sim.log" >&2; echo "e2e: pve-sim did not start" >&2; exit 1; }

oidc_port=$(free_port)
eval "$(infra/scripts/oidc.sh start "$work/oidc" "$oidc_port")"

api_port=$(free_port)
base="http://127.0.0.1:$api_port"
# As in production: migrations as the tables' owner, the API and the workers as `nimbus_app`.
DATABASE_MIGRATION_URL="$NIMBUS_DATABASE_URL" "$bin/nimbus-api" migrate >"$work/migrate.log" 2>&1
unset DATABASE_MIGRATION_URL
# The system's metering schedule, as if it had missed its last two hours: the workers catch each
# hour up when they start (the `meter` jobs of the `billing` queue); the operator flow shows it.
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
"$psql_bin" -X -q -v ON_ERROR_STOP=1 "$NIMBUS_DATABASE_URL" -c "insert into schedules \
  (id, name, cron, job_kind, queue, missed_fire_policy, next_fire_at) values (gen_random_uuid(), \
  'hourly metering', 'hourly', 'meter', 'billing', 'catch_up_all', date_trunc('hour', now()) - interval '2 hours')" \
  >"$work/seed.log" 2>&1
export DATABASE_URL="$NIMBUS_APP_DATABASE_URL" REDIS_URL="$NIMBUS_REDIS_URL"
export PVE_URL="https://127.0.0.1:$pve_port" PVE_TOKEN="$pve_token" PVE_FINGERPRINT="$fingerprint"
export LISTEN="127.0.0.1:$api_port" PUBLIC_URL="$base" NIMBUS_WEB_DIST="$root/web/dist"
export OIDC_ISSUER="$NIMBUS_TEST_OIDC_ISSUER" OIDC_CLIENT_SECRET=nimbus-dev-secret RUST_LOG="${RUST_LOG:-info}"

# The plan that first sign-ins get (OIDC_SIGNUP_PLAN=default): small, so over-quota is one click.
"$bin/nimbus-api" bootstrap --tenant Operators --email admin@nimbus.test --plan default \
  --max-instances 5 --max-vcpus 8 --max-memory-mib 16384 --max-disk-gib 200 >"$work/bootstrap.log" 2>&1
"$bin/nimbus-api" serve >"$work/api.log" 2>&1 &
pids+=($!)
wait_for "$base/readyz" "the API" "$work/api.log"
for n in 1 2; do
  # The browser flow's webhook receiver listens on loopback.
  WORKER_NAME="e2e-worker-$n" JOB_MAX_WAIT_IP_SECS=30 WEBHOOK_ALLOW_NETWORKS=127.0.0.1/32 \
    "$bin/nimbus-worker" >"$work/worker-$n.log" 2>&1 &
  pids+=($!)
done

shots="${E2E_SCREENSHOTS:-$target_dir/e2e-screenshots}"
mkdir -p "$shots"
rm -f "$shots"/failed-*.png
api_key="$(sed -n 's/^API key: //p' "$work/bootstrap.log")"
BASE_URL="$base" PVE_URL="$PVE_URL" PVE_TOKEN="$pve_token" CHROMIUM="$chromium" SCREENSHOTS="$shots" \
  PROFILE_ROOT="$work" API_KEY="$api_key" node web/tests/e2e.mjs

if [ "${E2E_UPDATE_DOCS:-0}" = 1 ]; then
  mkdir -p docs/screenshots
  cp "$shots"/*.png docs/screenshots/
  echo "e2e: screenshots copied to docs/screenshots/"
fi
