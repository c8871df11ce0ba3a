#!/usr/bin/env bash
# Set up (idempotent) and run every test: formatting and clippy lints, Rust unit + end-to-end
# tests (CPU and, through lavapipe, the wgpu path) and the Python interop checks of the bundled
# files; then the web page: built for wasm32 and tested in headless Chromium twice, with WebGPU
# (SwiftShader) and without (the CPU fallback).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" test
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cd "$root"
# One target folder shared by every checkout on this machine (CI clones reuse the built deps).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
# wgpu/Vulkan want a runtime dir; headless machines often lack one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
status=0
echo "== format and lints: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all --check 2>&1 || { echo "cargo fmt --check: run cargo fmt --all"; status=1; }
cargo clippy -q --workspace --all-targets -- -D warnings 2>&1 || status=1
# The browser's modules (natively flick-web is empty): the page and each engine alone.
for module in page cpu webgpu webgpu-burn; do
  cargo clippy -q -p flick-web --target wasm32-unknown-unknown --features "$module" -- -D warnings 2>&1 || status=1
done
echo "== tests"
cargo test --workspace --no-fail-fast 2>&1 || status=$?
echo "== web: build the page, then the real-browser test with WebGPU (both engines) and without"
if bash web/build.sh 2>&1; then
  rm -rf web/test-output
  node web/tests/browser.mjs --mode webgpu 2>&1 || status=1
  # burn's WebGPU engine (?engine=burn): the same clips as flick-direct's.
  node web/tests/browser.mjs --mode webgpu --params engine=burn --out web/test-output/webgpu-burn --compare web/test-output/webgpu 2>&1 || status=1
  # The CPU run also checks it made the same clip as WebGPU did.
  node web/tests/browser.mjs --mode cpu --compare web/test-output/webgpu 2>&1 || status=1
else
  echo "web/build.sh failed"
  status=1
fi
exit $status
