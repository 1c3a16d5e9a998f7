#!/usr/bin/env bash
# Installs only what is missing, so it is cheap to run before every `make dev` / `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install the Rust toolchain (rustup) first, then re-run." >&2
  exit 1
fi

apt_missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
command -v python3 >/dev/null || apt_missing+=(python3)
command -v redis-server >/dev/null || apt_missing+=(redis-server)
command -v curl >/dev/null || apt_missing+=(curl)
# PostgreSQL's server binaries: the machine's own (/usr/local/bin) or Debian's.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_missing+=(postgresql)
fi
if ((${#apt_missing[@]})); then
  echo "installing Debian packages: ${apt_missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${apt_missing[@]}"; fi
fi

# Third-party Proxmox client used to check the simulator's fidelity.
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import proxmoxer, requests' 2>/dev/null; then
  "$venv/bin/pip" install -q 'proxmoxer==2.3.0' requests
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
