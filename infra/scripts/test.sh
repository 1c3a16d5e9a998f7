#!/usr/bin/env bash
# `make test`: starts private PostgreSQL and Redis on free ports, runs every test, stops them.
set -euo pipefail
cd "$(dirname "$0")/../.."

svc_dir="/tmp/nimbus-test-$$"
trap 'infra/scripts/services.sh stop "$svc_dir" >/dev/null 2>&1 || true' EXIT
services_env="$(infra/scripts/services.sh start "$svc_dir")"
eval "$services_env"

cargo nextest run --workspace --no-fail-fast
