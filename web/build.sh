#!/usr/bin/env bash
# Build the browser page into web/dist/: the viewer compiled to wasm32 and bound with
# wasm-bindgen (pkg/), the page and its worker, and f16 copies of the bundled models (half the
# download). Installs what it needs (the wasm32 target, the wasm-bindgen CLI matching
# Cargo.lock). Serve the result with `bash web/serve.sh`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
dist="$root/web/dist"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "web/build.sh: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
# wasm-bindgen's CLI must be exactly the library's version (the one in Cargo.lock).
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  echo "web/build.sh: installing wasm-bindgen-cli $want (found: ${have:-none})"
  # (--locked first; some registry mirrors lack a pinned dependency, then let cargo resolve)
  cargo install wasm-bindgen-cli --version "$want" --locked || cargo install wasm-bindgen-cli --version "$want"
fi

echo "web/build.sh: compiling flick-web for wasm32 (profile web: size-optimised, thin LTO; see Cargo.toml)"
cargo build -p flick-web --target wasm32-unknown-unknown --profile web
rm -rf "$dist.tmp" && mkdir -p "$dist.tmp/pkg" "$dist.tmp/models"
# No name section (function names for stack traces: 10 MB of the 38 MB; panics keep their
# messages with file and line).
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$dist.tmp/pkg" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/flick_web.wasm"
wasm="$dist.tmp/pkg/flick_web_bg.wasm"
bound=$(stat -c %s "$wasm")
# No wasm-opt: Debian 12's binaryen (108) with --all-features writes types Chromium refuses
# ("invalid value type"); with rustc's features named, -Oz validates (28.3 → 20.6 MB) but
# breaks wasm-bindgen's externref table ("WebAssembly.Table.set(): Argument 1 is invalid"), and
# its brotli copy is larger anyway (3.69 MB against 3.48). Measured 2026-12-02.
# Precompressed copies for web/serve.py (a server sends one when the browser accepts it).
gzip -9 -k -f "$wasm"
if command -v brotli >/dev/null; then brotli -q 11 -k -f "$wasm"; fi
cp web/index.html web/worker.js "$dist.tmp/"

echo "web/build.sh: f16 copies of the bundled models"
# The `flick` binary built with the test command's package set (`-p flick-trainer` alone unifies
# other features of the shared dependencies and would compile the burn stack a second time).
cargo build -q --workspace --tests
for m in generator-small teacher-small; do
  "$CARGO_TARGET_DIR/debug/flick" convert --f16 "models/$m.safetensors" "$dist.tmp/models/$m.safetensors"
done
rm -rf "$dist" && mv "$dist.tmp" "$dist"
wasm="$dist/pkg/flick_web_bg.wasm"
echo "web/build.sh: wasm $bound bytes; served compressed: gzip $(stat -c %s "$wasm.gz")$( [ -f "$wasm.br" ] && echo ", brotli $(stat -c %s "$wasm.br")")"
wasm_mb="$(du -m "$dist/pkg/flick_web_bg.wasm" | cut -f1)"
echo "web/build.sh: built $dist (wasm $(stat -c %s "$dist/pkg/flick_web_bg.wasm") bytes ≈ ${wasm_mb} MB; models $(du -ch "$dist"/models/*.safetensors | tail -1 | cut -f1))"
