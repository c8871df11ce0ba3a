#!/usr/bin/env bash
# Equal-compute comparison of the backbones: each config trained from scratch by `flick
# train-teacher` for the same wall-clock budget, all at once on the same machine (one
# data-parallel worker each, so they share the cores evenly), then judged by one `flick eval`
# run at 25 steps on the held-out prompts. Resumable: run it again with the same OUT to
# continue interrupted runs (each resumes from its last checkpoint; the step count fixed by the
# budget is in its config.resolved.toml) and redo the eval.
#
#   bash scripts/backbone-ab.sh [OUT=runs/backbone-ab] [BUDGET_S=2400] [WARMUP_STEPS=20] [CONFIG ...]
#
# Default configs: teacher-small (DiT), teacher-unet (U-Net), teacher-nested (MDM nested U-Net).
# A screen is a few hundred steps, so every config's learning-rate warm-up is set to
# WARMUP_STEPS (the configs' 100 would be half the run); everything else is the config's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-runs/backbone-ab}"
budget="${2:-2400}"
warmup="${3:-20}"
shift $(( $# > 3 ? 3 : $# )) || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(configs/teacher-small.toml configs/teacher-unet.toml configs/teacher-nested.toml)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
# The same package set as the test command, so the burn stack is built once for both.
cargo build -q --workspace --tests
flick="$CARGO_TARGET_DIR/debug/flick"
mkdir -p "$out"
pids=()
for cfg in "${configs[@]}"; do
  name="$(basename "$cfg" .toml)"
  run="$out/$name"
  if [ -f "$run/state.safetensors" ]; then
    # Continue with the step count the budget fixed the first time.
    "$flick" train-teacher --config "$run/config.resolved.toml" --out "$run" --resume --workers 1 > "$out/$name.log" 2>&1 &
  else
    sed "s/^warmup_steps = .*/warmup_steps = $warmup/" "$cfg" > "$out/$name.screen.toml"
    "$flick" train-teacher --config "$out/$name.screen.toml" --out "$run" --workers 1 --time-budget "$budget" > "$out/$name.log" 2>&1 &
  fi
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ $status = 0 ] || { echo "a training run failed; see $out/*.log"; exit 1; }
models=()
for cfg in "${configs[@]}"; do
  name="$(basename "$cfg" .toml)"
  models+=(--model "$name=$out/$name/teacher.safetensors@25")
done
"$flick" eval "${models[@]}" --prompts 24 --seeds 2 --out "$out/eval"
