#!/usr/bin/env bash
# Build every Flick binary once, in one target folder shared by the scripts, the tests and every
# checkout on this machine ($CARGO_TARGET_DIR, default ~/.cache/flick-target): `flick`,
# `flick-viewer` and the test binaries, with one package set (`cargo build --workspace --tests`).
# Building a single package (`cargo build -p …`) would unify other features of the shared
# dependencies (wgpu's, for one) and compile the burn stack a second time.
# Quiet: one line; cargo's output goes to a log shown only if the build fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
log="${XDG_CACHE_HOME:-$HOME/.cache}/flick/build.log"
mkdir -p "$(dirname "$log")"
if [ -x "$CARGO_TARGET_DIR/debug/flick" ]; then
  printf 'building Flick… '
else
  printf 'building Flick (the first build takes about 30 min on 2 cores; log: %s)… ' "$log"
fi
if (cd "$root" && cargo build --workspace --tests) > "$log" 2>&1; then
  echo done
else
  echo FAILED
  cat "$log" >&2
  exit 1
fi
