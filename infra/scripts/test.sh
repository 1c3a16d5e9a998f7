#!/usr/bin/env bash
# `make test`: starts private PostgreSQL and Redis on free ports, runs every test, stops them.
set -euo pipefail
cd "$(dirname "$0")/../.."

svc_dir="/tmp/nimbus-test-$$"
trap 'infra/scripts/oidc.sh stop "$svc_dir/oidc" >/dev/null 2>&1 || true; infra/scripts/services.sh stop "$svc_dir" >/dev/null 2>&1 || true' EXIT
services_env="$(infra/scripts/services.sh start "$svc_dir")"
eval "$services_env"

# The OpenID provider of infra/oidc on a free port (exports NIMBUS_TEST_OIDC_ISSUER for the tests).
oidc_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
oidc_env="$(infra/scripts/oidc.sh start "$svc_dir/oidc" "$oidc_port")"
eval "$oidc_env"

rc=0
cargo nextest run --workspace --no-fail-fast || rc=$?
# The portal in headless Chromium against the whole stack (its own services on free ports; builds
# the binaries and the SPA).
infra/scripts/e2e.sh || rc=$?
exit "$rc"
