#!/usr/bin/env bash
# `make bench`: builds the benchmarks in release mode and runs each one; every benchmark prints its
# figures next to an anchor measured in the same run. Exits non-zero when any benchmark missed its target.
set -uo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p nimbus-api -p nimbus-worker -p nimbus-load-tests --bins || exit 1
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
status=0
for bench in pve-sim-bench queue-bench pipeline-bench api-bench conn-bench ops-bench scheduler-bench meter-bench webhook-bench scale-bench; do
  echo "=== $bench ==="
  "$target_dir/release/$bench" || status=1
done
exit $status
