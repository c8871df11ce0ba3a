#!/usr/bin/env bash
# Everything Flick needs on a fresh Debian 12 machine; safe to run again (each step checks first).
#  - Rust (rustup, stable ≥ 1.95) if cargo is missing
#  - Mesa's lavapipe Vulkan driver (the GPU path's tests run on it when there is no GPU)
#  - Python with Pillow + safetensors in .venv (the tests check our files open in them)
#  - the viewer's X11 libraries and Xvfb (its screenshot test opens the real window on a virtual
#    display)
#  - the web page's tools: the wasm32 target, Debian's Chromium, Node.js and the test's npm
#    packages (web/package-lock.json); web/build.sh installs the matching wasm-bindgen CLI
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
for p in chromium fonts-dejavu-core xvfb xauth libx11-6 libx11-xcb1 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup: installing Rust"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import safetensors, PIL, numpy' >/dev/null 2>&1; then
  echo "setup: creating .venv with Pillow, numpy, safetensors"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check pillow numpy safetensors
fi

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ ! -d web/node_modules/playwright-core ] || [ ! -d web/node_modules/pngjs ]; then
  echo "setup: installing the browser test's npm packages"
  (cd web && npm ci --no-audit --no-fund --silent)
fi
