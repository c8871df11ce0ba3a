#!/usr/bin/env bash
# What Flick needs on a fresh Debian 12 machine, in two sets; safe to run again (each step checks
# first and skips what is there):
#
#   bash scripts/setup.sh run [--wgpu]   to generate, train, evaluate, view: Rust and a C
#                                        toolchain; with --wgpu also Mesa's Vulkan driver (a GPU's
#                                        own driver works as well)
#   bash scripts/setup.sh test           everything the tests need besides: Mesa's Vulkan driver
#                                        (lavapipe: the GPU path's tests run on it without a GPU),
#                                        rustfmt and clippy,
#                                        a Python venv with Pillow + safetensors (interop checks),
#                                        PyTorch in its own venv (the twin's equality tests),
#                                        Xvfb and X11 libraries (the viewer's window test), the
#                                        wasm32 target, Chromium, Node.js and the browser test's
#                                        npm packages
#
# One line per step ("installing Rust… done"); the full apt/rustup/pip/npm output goes to the log
# named at the start, and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
wgpu=0
[ "${2:-}" = "--wgpu" ] && wgpu=1
case "$mode" in run|test) ;; *) echo "usage: bash scripts/setup.sh run [--wgpu] | test" >&2; exit 2;; esac

log="${FLICK_SETUP_LOG:-${XDG_CACHE_HOME:-$HOME/.cache}/flick/setup.log}"
mkdir -p "$(dirname "$log")"
: > "$log"

# step "what" command…: one line, the output to the log, the log shown if it fails.
step() {
  local what="$1"
  shift
  printf '%s… ' "$what"
  echo "== $what: $*" >> "$log"
  if "$@" >> "$log" 2>&1; then
    echo done
  else
    echo "FAILED"
    echo "---- $log ----" >&2
    cat "$log" >&2
    exit 1
  fi
}

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  # The run set takes no recommended packages; the test set does (Chromium's recommends are what
  # the headless browser test has been run with).
  local rec=--no-install-recommends
  [ "$mode" = test ] && rec=
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $rec "$@"
}

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
if [ "$mode" = test ] || [ $wgpu = 1 ]; then
  dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
  dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
fi
if [ "$mode" = test ]; then
  command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)   # the read-only-folder test
  command -v brotli >/dev/null 2>&1 || need_apt+=(brotli)       # web/build.sh: precompressed wasm
  for p in chromium fonts-dejavu-core xvfb xauth libx11-6 libx11-xcb1 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0; do
    dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: log in $log"
  step "installing ${#need_apt[@]} Debian packages (${need_apt[*]})" apt_install "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  rustup_install() {
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
  }
  step "installing Rust" rustup_install
fi
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

[ "$mode" = test ] || exit 0

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import safetensors, PIL, numpy' >/dev/null 2>&1; then
  venv_install() {
    python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check pillow numpy safetensors
  }
  step "creating .venv with Pillow, numpy, safetensors" venv_install
fi

# PyTorch for the twin's equality tests and the side-by-side training benchmark
# (scripts/torch_twin/): its own venv beside the build cache, shared by every checkout (≈ 4.5 GB
# with the CUDA wheels PyPI serves for Linux; pip's cache makes a reinstall quick).
torch_venv="$HOME/.cache/flick/torch-venv"
if ! "$torch_venv/bin/python" -c 'import torch, safetensors, numpy' >/dev/null 2>&1; then
  torch_install() {
    python3 -m venv "$torch_venv" && "$torch_venv/bin/pip" install -q --disable-pip-version-check torch==2.15.0 numpy safetensors
  }
  step "installing PyTorch in $torch_venv" torch_install
fi

if command -v rustup >/dev/null 2>&1 && ! { rustup component list --installed | grep -q '^clippy' && rustup component list --installed | grep -q '^rustfmt'; }; then
  step "adding rustfmt and clippy" rustup component add rustfmt clippy
fi
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding the wasm32-unknown-unknown target" rustup target add wasm32-unknown-unknown
fi

if [ ! -d web/node_modules/playwright-core ] || [ ! -d web/node_modules/pngjs ]; then
  npm_install() { (cd web && npm ci --no-audit --no-fund --silent); }
  step "installing the browser test's npm packages" npm_install
fi
