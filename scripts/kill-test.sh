#!/usr/bin/env bash
# Kill test, long form: the teacher, APT and DMD2 training runs each SIGKILLed at 20 random
# moments (checkpoint writes included) and resumed; every file on disk must load after each
# kill, at most checkpoint_every steps may be lost, and the resumed runs must end bit-identical
# to uninterrupted ones. Prints one line per run. The test command runs the short form (3 kills).
#   bash scripts/kill-test.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
export FLICK_KILLS="${1:-20}"
[ -n "${2:-}" ] && export FLICK_KILL_SEED="$2"
cargo test --workspace --test kill -- --nocapture 2>&1 |
  grep -E "kill campaign|kills survived|panicked|differs|steps lost|test result"
