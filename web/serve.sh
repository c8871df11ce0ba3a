#!/usr/bin/env bash
# Serve the built page (web/build.sh) on http://127.0.0.1:${PORT:-8080}/ — a static server is
# all it needs. `?backend=cpu` forces the CPU fallback; `?backend=webgpu` insists on WebGPU.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$root/web/dist/index.html" ] || { echo "web/serve.sh: no web/dist yet: run bash web/build.sh first" >&2; exit 1; }
port="${PORT:-8080}"
echo "serving $root/web/dist on http://127.0.0.1:$port/"
exec python3 -m http.server --bind 127.0.0.1 --directory "$root/web/dist" "$port"
