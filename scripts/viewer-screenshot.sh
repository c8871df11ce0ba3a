#!/usr/bin/env bash
# Open the real viewer window on a virtual X display (Xvfb; wgpu renders through Mesa's lavapipe
# when there is no GPU), generate a batch of clips with the bundled model, save the window as a
# PNG and print where the first clip was drawn:
#
#   bash scripts/viewer-screenshot.sh [OUT.png [viewer options]]   (default: viewer-screenshot.png)
#   e.g. bash scripts/viewer-screenshot.sh teacher.png --select teacher-small --steps 25
#
# Prints `screenshot OUT.png clip X0 Y0 X1 Y1` (pixels). FLICK_VIEWER: a built flick-viewer
# binary (default: build it with cargo). BACKEND: where the clips are generated (default cpu).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-viewer-screenshot.png}"
shift || true
bin="${FLICK_VIEWER:-}"
if [ -z "$bin" ]; then
  bash "$root/scripts/setup.sh" test
  bash "$root/scripts/build.sh"
  bin="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}/debug/flick-viewer"
fi
command -v xvfb-run >/dev/null || { echo "xvfb-run is missing (bash scripts/setup.sh test installs xvfb)" >&2; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# Software rendering must not depend on a user's saved window state: a fresh config dir.
export XDG_CONFIG_HOME="$(mktemp -d)" XDG_DATA_HOME="$(mktemp -d)"
# winit under Xvfb: X11 only.
unset WAYLAND_DISPLAY
xvfb-run -a -s "-screen 0 1280x800x24" timeout 300 "$bin" --backend "${BACKEND:-cpu}" --screenshot "$out" "$@"
