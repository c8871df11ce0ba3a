#!/usr/bin/env bash
# Serve the built page (web/build.sh) on http://127.0.0.1:${PORT:-8080}/ — a static server that
# sends the precompressed wasm (web/serve.py). `?backend=cpu` forces the CPU fallback;
# `?backend=webgpu` insists on WebGPU; `?engine=burn` generates on WebGPU through burn instead of
# flick-direct.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$root/web/dist/index.html" ] || { echo "web/serve.sh: no web/dist yet: run bash web/build.sh first" >&2; exit 1; }
port="${PORT:-8080}"
exec python3 "$root/web/serve.py" --bind 127.0.0.1 --dir "$root/web/dist" --port "$port"
