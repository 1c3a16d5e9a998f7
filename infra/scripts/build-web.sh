#!/usr/bin/env bash
# Builds the portal (web/) into web/dist: cargo (wasm32, profile web-release) → wasm-bindgen →
# wasm-opt -Oz (npm binaryen; Debian's is too old, TOOLCHAIN.md) → content-hashed names under
# assets/ (the consoles' npm libraries and the API reference's Redoc under versioned folders) → brotli and gzip copies.
# Prints what a browser downloads on first load (brotli, gzip beside it) and fails above the budget.
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
# The consoles: noVNC and xterm.js from npm, under folders named by their versions, behind our
# console module; none of it is part of the first load.
npm_version() { node -p "require('./web/node_modules/$1/package.json').version"; }
novnc=$(npm_version @novnc/novnc)
xterm=$(npm_version @xterm/xterm)
sed -e "s/{{NOVNC}}/$novnc/g" -e "s/{{XTERM}}/$xterm/g" web/console.js > "$work/console.js"
console=$(hashed "$work/console.js" console js)
# The boot module is a file, not an inline script, so the page's CSP needs no inline scripts.
sed -e "s/{{JS}}/$js/g" -e "s/{{WASM}}/$wasm/g" -e "s/{{CONSOLE}}/$console/g" web/boot.js > "$work/boot.js"
boot=$(hashed "$work/boot.js" boot js)

rm -rf "$out.tmp" && mkdir -p "$out.tmp/assets"
cp "$work/nimbus-web.js" "$out.tmp/assets/$js"
cp "$work/app.wasm" "$out.tmp/assets/$wasm"
cp web/style.css "$out.tmp/assets/$css"
cp "$work/boot.js" "$out.tmp/assets/$boot"
cp "$work/console.js" "$out.tmp/assets/$console"
mkdir -p "$out.tmp/assets/novnc-$novnc" "$out.tmp/assets/xterm-$xterm"
cp -r web/node_modules/@novnc/novnc/core web/node_modules/@novnc/novnc/vendor \
  web/node_modules/@novnc/novnc/LICENSE.txt "$out.tmp/assets/novnc-$novnc/"
# xterm's ES module, named .js so every server types it as JavaScript.
cp web/node_modules/@xterm/xterm/lib/xterm.mjs "$out.tmp/assets/xterm-$xterm/xterm.js"
cp web/node_modules/@xterm/xterm/css/xterm.css web/node_modules/@xterm/xterm/LICENSE "$out.tmp/assets/xterm-$xterm/"
sed -e "s/{{JS}}/$js/g" -e "s/{{WASM}}/$wasm/g" -e "s/{{CSS}}/$css/g" -e "s/{{BOOT}}/$boot/g" web/index.html \
  > "$out.tmp/index.html"
# The API reference page (GET /v1/docs, served by the API): Redoc's standalone bundle from npm,
# under a folder named by its version, rendering /v1/openapi.json.
redoc=$(npm_version redoc)
mkdir -p "$out.tmp/assets/redoc-$redoc"
cp web/node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt web/node_modules/redoc/LICENSE "$out.tmp/assets/redoc-$redoc/"
# Its side menu shows a logo from Redocly's CDN; the page loads nothing from elsewhere (its CSP
# would refuse it), so the copy shows an empty image there, which Redoc then leaves out.
cdn_logo='https://cdn.redoc.ly/redoc/logo-mini.svg'
grep -q "$cdn_logo" web/node_modules/redoc/bundles/redoc.standalone.js || {
  echo "build-web: Redoc's bundle no longer names $cdn_logo; check what it loads from elsewhere" >&2
  exit 1
}
sed "s|$cdn_logo|data:,|g" web/node_modules/redoc/bundles/redoc.standalone.js > "$out.tmp/assets/redoc-$redoc/redoc.standalone.js"
if grep -Eo 'https?://[a-z0-9.-]+/[^"'"'"' ]+\.(js|css|svg|png|woff2?)' "$out.tmp/assets/redoc-$redoc/redoc.standalone.js" | grep -v 'w3.org'; then
  echo "build-web: Redoc's bundle loads the files above from elsewhere" >&2
  exit 1
fi
sed -e "s/{{REDOC}}/$redoc/g" web/api-reference.html > "$out.tmp/api-reference.html"
# Precompressed copies, served by the API to clients that accept gzip.
files=$(find "$out.tmp" -type f \( -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.wasm' \))
# shellcheck disable=SC2086
gzip -9 -n -k $files
# Brotli copies (node's zlib, quality 11), sent to browsers that accept br.
# shellcheck disable=SC2086
node -e '
  const fs = require("fs"), zlib = require("zlib");
  for (const f of process.argv.slice(1)) {
    const raw = fs.readFileSync(f);
    const params = { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: raw.length };
    fs.writeFileSync(f + ".br", zlib.brotliCompressSync(raw, { params }));
  }' $files
rm -rf "$out" && mv "$out.tmp" "$out"

size() { stat -c %s "$1"; }
total=0
total_gz=0
echo "first load (what the browser downloads: brotli over HTTPS, gzip beside it):"
for f in "assets/$wasm" "assets/$js" "assets/$boot" "assets/$css" index.html; do
  raw=$(size "$out/$f"); br=$(size "$out/$f.br"); gz=$(size "$out/$f.gz")
  total=$((total + br)); total_gz=$((total_gz + gz))
  printf '  %-40s %9d B  %8d B br  %8d B gzip\n' "$f" "$raw" "$br" "$gz"
done
printf '  %-40s %9s    %8d B br  %8d B gzip  (budget %d KB = %d B, brotli)\n' total "" "$total" "$total_gz" \
  "$budget_kb" $((budget_kb * 1024))
if [ "$total" -gt $((budget_kb * 1024)) ]; then
  echo "build-web: first load is $total B brotli, above the ${budget_kb} KB budget" >&2
  exit 1
fi
echo "build-web: $root/$out"
