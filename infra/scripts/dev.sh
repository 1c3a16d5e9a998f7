#!/usr/bin/env bash
# Starts the development stack in the foreground; Ctrl-C stops everything it started.
# State lives under .dev/ so a re-run resumes where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .dev

listen="${PVE_SIM_LISTEN:-127.0.0.1:8006}"
cargo build -p pve-sim --bin pve-sim
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  infra/scripts/services.sh stop .dev/services --keep >/dev/null 2>&1 || true
}
trap cleanup INT TERM EXIT

# PostgreSQL and Redis with their data under .dev/services (kept between runs).
eval "$(infra/scripts/services.sh start .dev/services --persist)"

"$target_dir/debug/pve-sim" --listen "$listen" --nodes 3 --state-file .dev/pve-sim.json &
pids+=($!)

echo
echo "PostgreSQL: $NIMBUS_DATABASE_URL"
echo "Redis:      $NIMBUS_REDIS_URL"
echo "Simulated Proxmox VE cluster: https://$listen/api2/json (token and fingerprint printed above)"
echo "Press Ctrl-C to stop."
wait
