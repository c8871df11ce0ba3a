#!/usr/bin/env bash
# Train a teacher on a GPU (burn's wgpu backend) within a wall-clock budget: run the first
# steps to measure throughput (this includes the one-off shader compilation and autotuning,
# about 2 minutes on an H200), then set `train.steps` (and a cooldown of a sixth of them) so
# the run ends inside the budget, and resume to the end. The EMA model, metrics and sample
# grid land in OUT as in any run.
#
#   bash scripts/train-gpu.sh CONFIG OUT SECONDS [extra train-teacher arguments, e.g. --init-from M]
#
# FLICK: the flick binary to use (default: build and run it with cargo). BACKEND: wgpu
# (default) or cpu. WARMUP_STEPS: steps of the measuring run (default 100).
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,12p "$0"; exit 2; }
config=$1; out=$2; budget=$3; shift 3
t0=$(date +%s)
if [ -n "${FLICK:-}" ]; then flick=("$FLICK"); else
  root="$(cd "$(dirname "$0")/.." && pwd)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
  (cd "$root" && cargo build -q -p flick-trainer --bin flick)
  flick=("$CARGO_TARGET_DIR/debug/flick")
fi
backend=${BACKEND:-wgpu}; first=${WARMUP_STEPS:-100}
[ -e "$out/state.safetensors" ] && { echo "$out already holds a run: choose another OUT" >&2; exit 1; }
mkdir -p "$out"
cfg="$out/budgeted.toml"
cp "$config" "$cfg"
batch=$(awk '/^\[/ { sec = $0 } sec == "[train]" && /^batch_size *=/ { sub(/^batch_size *= */, ""); print $1 }' "$cfg")
"${flick[@]}" train-teacher --config "$cfg" --out "$out" --backend "$backend" --workers 1 --stop-at "$first" "$@"
rate=$(tail -n 1 "$out/metrics.jsonl" | sed 's/.*"clips_per_s":\([0-9.e+-]*\).*/\1/')
left=$(( budget - ($(date +%s) - t0) ))
steps=$(awk -v f="$first" -v l="$left" -v r="$rate" -v b="$batch" 'BEGIN { s = int(l * r * 0.9 / b); if (s < 0) s = 0; print f + s }')
cool=$(( (steps - first) / 6 ))
# Only the [train] table's keys ([sample] has a `steps` too).
awk -v s="$steps" -v c="$cool" '/^\[/ { sec = $0 } sec == "[train]" && /^steps *=/ { $0 = "steps = " s } sec == "[train]" && /^cooldown_steps *=/ { $0 = "cooldown_steps = " c } { print }' "$cfg" > "$cfg.tmp" && mv "$cfg.tmp" "$cfg"
echo "train-gpu: $rate clips/s after $first steps, $left s left: steps = $steps, cooldown = $cool (written to $cfg)"
"${flick[@]}" train-teacher --config "$cfg" --out "$out" --backend "$backend" --workers 1 --resume
echo "train-gpu: done in $(( $(date +%s) - t0 )) s"
