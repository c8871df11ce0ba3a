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

rm -rf "$dist.tmp" && mkdir -p "$dist.tmp/pkg" "$dist.tmp/models"
# Four modules, one build of flick-web each (web/Cargo.toml): the page's app, and the generation
# engines (the page loads one): WebGPU through flick-direct, the CPU, and WebGPU through burn
# (?engine=burn). `page`, `cpu` and `webgpu` share one build of burn (flex; only flick-core's
# checkpoint and sampling code runs in `webgpu`).
for module in page cpu webgpu webgpu-burn; do
  echo "web/build.sh: compiling the $module module for wasm32 (profile web: size-optimised, fat LTO; see Cargo.toml)"
  cargo build -p flick-web --target wasm32-unknown-unknown --profile web --features "$module"
  # No name section (function names for stack traces: a third of the size; panics keep their
  # messages with file and line).
  wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$dist.tmp/pkg" --out-name "flick_$module" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/flick_web.wasm"
  wasm="$dist.tmp/pkg/flick_${module}_bg.wasm"
  # No wasm-opt: Debian 12's binaryen (108) with --all-features writes types Chromium refuses
  # ("invalid value type"); with rustc's features named, -Oz validates (28.3 → 20.6 MB for the
  # single module of 2026-12-02) but breaks wasm-bindgen's externref table
  # ("WebAssembly.Table.set(): Argument 1 is invalid"), and its brotli copy is larger anyway
  # (3.69 MB against 3.48).
  # Precompressed copies for web/serve.py (a server sends one when the browser accepts it).
  gzip -9 -k -f "$wasm"
  if command -v brotli >/dev/null; then brotli -q 11 -k -f "$wasm"; fi
done
cp web/index.html web/worker.js "$dist.tmp/"

echo "web/build.sh: f16 copies of the bundled models"
# The `flick` binary built with the test command's package set (`-p flick-trainer` alone unifies
# other features of the shared dependencies and would compile the burn stack a second time).
cargo build -q --workspace --tests
for m in generator-small teacher-small; do
  "$CARGO_TARGET_DIR/debug/flick" convert --f16 "models/$m.safetensors" "$dist.tmp/models/$m.safetensors"
done
rm -rf "$dist" && mv "$dist.tmp" "$dist"
# What a page downloads: its app and one engine (the CPU engine too where WebGPU proves unfit).
python3 - "$dist/pkg" <<'PY'
import json, os, sys
pkg = sys.argv[1]
def size(name):
    path = os.path.join(pkg, name)
    return os.path.getsize(path) if os.path.exists(path) else None
modules = {m: {"raw": size(f"flick_{m}_bg.wasm"), "gzip": size(f"flick_{m}_bg.wasm.gz"), "brotli": size(f"flick_{m}_bg.wasm.br")} for m in ("page", "cpu", "webgpu", "webgpu-burn")}
for m, s in modules.items():
    print(f"web/build.sh: {m} module: {s['raw']:,} bytes; gzip {s['gzip']:,}" + (f", brotli {s['brotli']:,}" if s["brotli"] else ""))
for engine in ("cpu", "webgpu", "webgpu-burn"):
    total = {k: (modules["page"][k] or 0) + (modules[engine][k] or 0) for k in ("raw", "gzip", "brotli")}
    print(f"web/build.sh: a page on the {engine} engine downloads {total['raw']:,} bytes of wasm ({total['raw'] / 1e6:.2f} MB); served compressed: gzip {total['gzip']:,}" + (f", brotli {total['brotli']:,}" if modules["page"]["brotli"] else ""))
json.dump(modules, open(os.path.join(pkg, "sizes.json"), "w"), indent=1)
PY
echo "web/build.sh: built $dist (models $(du -ch "$dist"/models/*.safetensors | tail -1 | cut -f1))"
