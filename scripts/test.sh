#!/usr/bin/env bash
# Set up (idempotent) and run every test: Rust unit + end-to-end tests (CPU and, through
# lavapipe, the wgpu path) and the Python interop checks of the bundled files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cd "$root"
# One target folder shared by every checkout on this machine (CI clones reuse the built deps).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
# wgpu/Vulkan want a runtime dir; headless machines often lack one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cargo test --workspace --no-fail-fast 2>&1
