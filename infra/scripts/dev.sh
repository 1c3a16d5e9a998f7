#!/usr/bin/env bash
# Starts the development stack in the foreground; Ctrl-C stops everything it started.
# State lives under .dev/ so a re-run resumes where the last one stopped: PostgreSQL and Redis data,
# the simulated cluster, its API token, and the demo admin's API key.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .dev

pve_listen="${PVE_SIM_LISTEN:-127.0.0.1:8006}"
api_listen="${NIMBUS_LISTEN:-127.0.0.1:8080}"
oidc_port="${OIDC_PORT:-9400}"
smtp_port="${SMTP_CATCHER_PORT:-1025}"
inbox_port="${SMTP_INBOX_PORT:-1080}"
# Metrics listeners (Prometheus format): the API's, then one port per worker after it.
metrics_port="${METRICS_PORT:-9090}"

cargo build -p pve-sim -p nimbus-api -p nimbus-worker --bins
# The portal, served by the API at / (NIMBUS_WEB_DIST below).
infra/scripts/build-web.sh
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  infra/scripts/oidc.sh stop .dev/oidc >/dev/null 2>&1 || true
  infra/scripts/services.sh stop .dev/services --keep >/dev/null 2>&1 || true
}
trap cleanup INT TERM EXIT

# PostgreSQL and Redis with their data under .dev/services (kept between runs).
services_env="$(infra/scripts/services.sh start .dev/services --persist)"
eval "$services_env"

# The simulated Proxmox cluster, with a token kept across runs and a pinned certificate.
[ -s .dev/pve-token ] || echo "root@pam!nimbus=$(cat /proc/sys/kernel/random/uuid)" > .dev/pve-token
chmod 600 .dev/pve-token
"$bin/pve-sim" --listen "$pve_listen" --nodes 3 --state-file .dev/pve-sim.json --token "$(cat .dev/pve-token)" \
  > .dev/pve-sim.log 2>&1 &
pids+=($!)
fingerprint=""
for _ in $(seq 1 100); do
  fingerprint="$(sed -n 's/^certificate fingerprint (SHA-256): //p' .dev/pve-sim.log)"
  [ -n "$fingerprint" ] && break
  sleep 0.1
done
[ -n "$fingerprint" ] || { cat .dev/pve-sim.log >&2; echo "pve-sim did not start" >&2; exit 1; }

# Migrations run as the tables' owner; the API and the workers connect as the runtime role
# `nimbus_app`, which cannot alter tables or switch the audit log's triggers off (README "Database
# roles"). The owner's URL is given to `migrate` alone, never to the long-running processes.
DATABASE_MIGRATION_URL="$NIMBUS_DATABASE_URL" "$bin/nimbus-api" migrate
unset DATABASE_MIGRATION_URL
export DATABASE_URL="$NIMBUS_APP_DATABASE_URL" REDIS_URL="$NIMBUS_REDIS_URL"
export PVE_URL="https://$pve_listen" PVE_TOKEN="$(cat .dev/pve-token)" PVE_FINGERPRINT="$fingerprint"
export LISTEN="$api_listen"

# The OpenID provider with the demo users (infra/oidc); the API signs browsers in through it and
# accepts its access tokens. Its redirect URIs accept http://127.0.0.1:<any port>/auth/callback.
infra/scripts/oidc.sh stop .dev/oidc >/dev/null 2>&1 || true
eval "$(infra/scripts/oidc.sh start .dev/oidc "$oidc_port")"
export OIDC_ISSUER="$NIMBUS_TEST_OIDC_ISSUER" OIDC_CLIENT_ID=nimbus OIDC_CLIENT_SECRET=nimbus-dev-secret
export PUBLIC_URL="http://$api_listen"
export NIMBUS_WEB_DIST="$PWD/web/dist"

# The SMTP catcher with a web inbox: every notification email lands there (started directly, not
# through npx, so stopping it stops it).
node infra/maildev/node_modules/maildev/dist/bin/maildev.js --smtp "$smtp_port" --web "$inbox_port" \
  --ip 127.0.0.1 --web-ip 127.0.0.1 > .dev/maildev.log 2>&1 &
pids+=($!)
export SMTP_HOST=127.0.0.1 SMTP_PORT="$smtp_port" SMTP_TLS=none SMTP_FROM="Nimbus <nimbus@nimbus.dev>"
# A developer points webhook endpoints at a listener on this machine; production allows no
# private or loopback address (README "Webhooks").
export WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8,::1/128"

# The demo tenant, its admin and API key: created once, the key kept (mode 600) so re-runs can show it.
if [ ! -s .dev/admin-api-key ]; then
  "$bin/nimbus-api" bootstrap --tenant Demo --email admin@nimbus.dev | tee .dev/bootstrap.txt
  sed -n 's/^API key: //p' .dev/bootstrap.txt > .dev/admin-api-key
  chmod 600 .dev/admin-api-key
  rm -f .dev/bootstrap.txt
fi

METRICS_LISTEN="127.0.0.1:$metrics_port" "$bin/nimbus-api" serve &
pids+=($!)
# The workers start once the API answers.
for _ in $(seq 1 100); do
  curl -fs "http://$api_listen/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
for n in 1 2; do
  WORKER_NAME="dev-worker-$n" METRICS_LISTEN="127.0.0.1:$((metrics_port + n))" "$bin/nimbus-worker" &
  pids+=($!)
done

cat <<INFO

Nimbus development stack
  Portal:      http://$api_listen/
  API:         http://$api_listen   with two worker processes   (try: curl -H "Authorization: Bearer \$(cat .dev/admin-api-key)" http://$api_listen/v1/templates)
  admin key:   $(cat .dev/admin-api-key)   (tenant Demo, admin@nimbus.dev)
  Reference:   http://$api_listen/v1/docs   (the OpenAPI 3.1 document: http://$api_listen/v1/openapi.json)
  Sign-in:     http://$api_listen/auth/login   via the dev OpenID provider $OIDC_ISSUER (log in .dev/oidc/oidc.log)
               admin@nimbus.test / admin-pass (admin)   alice@acme.test / alice-pass   bob@globex.test / bob-pass
  Metrics:     http://127.0.0.1:$metrics_port/metrics (API), :$((metrics_port + 1)) and :$((metrics_port + 2)) (workers)
  Email:       http://127.0.0.1:$inbox_port/   (the SMTP catcher's inbox; notification emails land there)
  Webhooks:    endpoints may point at loopback listeners here (WEBHOOK_ALLOW_NETWORKS=$WEBHOOK_ALLOW_NETWORKS)
  Proxmox:     https://$pve_listen/api2/json (simulated; token in .dev/pve-token, log in .dev/pve-sim.log)
  PostgreSQL:  $NIMBUS_APP_DATABASE_URL   (the API and workers: role nimbus_app)
               $NIMBUS_DATABASE_URL   (the tables' owner: migrations)
  Redis:       $NIMBUS_REDIS_URL
Press Ctrl-C to stop everything.
INFO
wait
