#!/usr/bin/env bash
# Builds the portal (web/) into web/dist: cargo (wasm32, profile web-release) → wasm-bindgen →
# wasm-opt -Oz (npm binaryen; Debian's is too old, TOOLCHAIN.md) → content-hashed names under
# assets/ → gzip copies. Prints what a browser downloads on first load and fails above the budget.
#   infra/scripts/build-web.sh [OUT_DIR]      (default web/dist; BUDGET_KB overrides 250)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=${1:-web/dist}
budget_kb=${BUDGET_KB:-250}
target_dir=${CARGO_TARGET_DIR:-target}

want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "build-web: wasm-bindgen $want is needed (found '${have:-none}'); run infra/scripts/install-deps.sh" >&2
  exit 1
fi
wasm_opt=web/node_modules/.bin/wasm-opt
if [ ! -x "$wasm_opt" ]; then
  echo "build-web: $wasm_opt is missing; run infra/scripts/install-deps.sh" >&2
  exit 1
fi

cargo build -p nimbus-web --target wasm32-unknown-unknown --profile web-release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wasm-bindgen --target web --no-typescript --out-dir "$work" \
  "$target_dir/wasm32-unknown-unknown/web-release/nimbus-web.wasm"
"$wasm_opt" -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-nontrapping-float-to-int \
  -o "$work/app.wasm" "$work/nimbus-web_bg.wasm"

hashed() { # file stem ext → stem-<10 hex of sha256>.ext
  echo "$2-$(sha256sum "$1" | cut -c1-10).$3"
}
js=$(hashed "$work/nimbus-web.js" nimbus-web js)
wasm=$(hashed "$work/app.wasm" nimbus-web wasm)
css=$(hashed web/style.css style css)
# The boot module is a file, not an inline script, so the page's CSP needs no inline scripts.
sed -e "s/{{JS}}/$js/g" -e "s/{{WASM}}/$wasm/g" web/boot.js > "$work/boot.js"
boot=$(hashed "$work/boot.js" boot js)

rm -rf "$out.tmp" && mkdir -p "$out.tmp/assets"
cp "$work/nimbus-web.js" "$out.tmp/assets/$js"
cp "$work/app.wasm" "$out.tmp/assets/$wasm"
cp web/style.css "$out.tmp/assets/$css"
cp "$work/boot.js" "$out.tmp/assets/$boot"
sed -e "s/{{JS}}/$js/g" -e "s/{{WASM}}/$wasm/g" -e "s/{{CSS}}/$css/g" -e "s/{{BOOT}}/$boot/g" web/index.html \
  > "$out.tmp/index.html"
# Precompressed copies, served by the API to clients that accept gzip.
for f in "$out.tmp"/index.html "$out.tmp"/assets/*; do gzip -9 -n -k "$f"; done
rm -rf "$out" && mv "$out.tmp" "$out"

size() { stat -c %s "$1"; }
total=0
echo "first load (what the browser downloads, gzip):"
for f in "assets/$wasm" "assets/$js" "assets/$boot" "assets/$css" index.html; do
  raw=$(size "$out/$f"); gz=$(size "$out/$f.gz"); total=$((total + gz))
  printf '  %-40s %9d B  %8d B gzip\n' "$f" "$raw" "$gz"
done
printf '  %-40s %9s    %8d B gzip  (budget %d KB = %d B)\n' total "" "$total" "$budget_kb" $((budget_kb * 1024))
if [ "$total" -gt $((budget_kb * 1024)) ]; then
  echo "build-web: first load is $total B gzip, above the ${budget_kb} KB budget" >&2
  exit 1
fi
echo "build-web: $root/$out"
