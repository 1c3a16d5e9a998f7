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
# The portal's build tools (npm) and browser tests (Debian's Chromium, driven by playwright-core).
command -v npm >/dev/null || apt_missing+=(npm)
command -v chromium >/dev/null || apt_missing+=(chromium)
# PostgreSQL's server binaries: the machine's own (/usr/local/bin) or Debian's.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_missing+=(postgresql)
fi
if ((${#apt_missing[@]})); then
  echo "installing Debian packages: ${apt_missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${apt_missing[@]}"; fi
fi

# Third-party Proxmox client used to check the simulator's fidelity; localstripe, a stateful
# fake of Stripe's API that the payment tests run the Stripe provider against; standardwebhooks,
# the reference verifier webhook deliveries are checked with; aiosmtpd, the SMTP catcher; PyYAML,
# jsonschema, kubernetes-validate and yamllint, with which kong/kong.yml and the deployment files
# are checked (infra/testing/kong_check.py, check_deploy.py).
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import proxmoxer, requests, localstripe, standardwebhooks, aiosmtpd, yaml, jsonschema, kubernetes_validate, yamllint, schemathesis' 2>/dev/null; then
  "$venv/bin/pip" install -q 'proxmoxer==2.3.0' requests 'localstripe==1.15.10' 'standardwebhooks==1.1.0' \
    'aiosmtpd==1.4.6' 'PyYAML==6.0.3' 'jsonschema==4.26.0' 'kubernetes-validate==1.37.0' 'yamllint==1.38.0' \
    'schemathesis==4.32.5'
fi

# The development/test OpenID provider (infra/oidc): reinstalled when its lockfile changed.
if ! command -v npm >/dev/null; then
  echo "npm is missing (Debian: apt-get install npm)" >&2
  exit 1
fi
if [ ! -d infra/oidc/node_modules/oidc-provider ] || [ infra/oidc/package-lock.json -nt infra/oidc/node_modules ]; then
  (cd infra/oidc && npm ci --no-audit --no-fund)
  touch infra/oidc/node_modules
fi

# The SMTP catcher with a web inbox that `make dev` starts (infra/maildev).
if [ ! -d infra/maildev/node_modules/maildev ] || [ infra/maildev/package-lock.json -nt infra/maildev/node_modules ]; then
  (cd infra/maildev && npm ci --no-audit --no-fund --loglevel=error)
  touch infra/maildev/node_modules
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The portal (web/): the wasm target, the wasm-bindgen CLI of the version in Cargo.lock (installed
# without --locked: its lockfile pins a crate version the registry lacks, TOOLCHAIN.md), and the npm
# tools in web/ (binaryen's wasm-opt, playwright-core).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
wasm_bindgen_want="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
wasm_bindgen_have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ -n "$wasm_bindgen_want" ] && [ "$wasm_bindgen_have" != "$wasm_bindgen_want" ]; then
  echo "installing wasm-bindgen-cli $wasm_bindgen_want (found '${wasm_bindgen_have:-none}')"
  cargo install wasm-bindgen-cli --version "$wasm_bindgen_want"
fi
if [ ! -x web/node_modules/.bin/wasm-opt ] || [ ! -d web/node_modules/playwright-core ] \
  || [ web/package-lock.json -nt web/node_modules ]; then
  (cd web && npm ci --no-audit --no-fund)
  touch web/node_modules
fi
