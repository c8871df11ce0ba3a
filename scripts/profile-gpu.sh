#!/usr/bin/env bash
# Where the device time of a teacher-small training step and of a one-step generation goes, per
# kernel family: a first run fills cubecl's autotune cache (not profiled), a second run with a
# cubecl.toml ([profiling.logger] level = "basic") in its working directory times every kernel
# alone on the device, and scripts/profile_summary.py sums the log. The run itself is slower
# than an unprofiled one; the shares are what matter. Writes OUT/train-profile.md,
# OUT/gen-profile.md and the raw logs (xz).
#
#   bash scripts/profile-gpu.sh OUT [BATCH]
#
# FLICK: the flick binary to use (default: build it with cargo). WARM_STEPS, STEPS: steps of the
# warm-up and the profiled run (default 2 and 3). The first steps of the profiled run still
# hold one-off work; scripts/profile_summary.py on the log's tail gives the steady state.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,13p "$0"; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
out=$(mkdir -p "$1" && cd "$1" && pwd); batch=${2:-128}
if [ -n "${FLICK:-}" ]; then flick=$(readlink -f "$FLICK"); else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
  (cd "$root" && cargo build -q -p flick-trainer --bin flick)
  flick="$CARGO_TARGET_DIR/debug/flick"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s/^batch_size = .*/batch_size = $batch/" "$root/configs/teacher-small.stage10.gpu.toml" > "$work/b.toml"
train=("$flick" train-teacher --config "$work/b.toml" --backend wgpu --workers 1 --init-from "$root/models/teacher-small.safetensors")
echo "profile-gpu: warm-up run (autotune), batch $batch"
"${train[@]}" --out "$work/warm" --steps "${WARM_STEPS:-2}" > "$out/warm.log" 2>&1
mkdir -p "$work/p" "$work/g"
printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "$work/p/train.log" > "$work/p/cubecl.toml"
printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "$work/g/gen.log" > "$work/g/cubecl.toml"
echo "profile-gpu: profiled training run"
(cd "$work/p" && "${train[@]}" --out "$work/prof" --steps "${STEPS:-3}" > "$out/prof.log" 2>&1)
echo "profile-gpu: profiled one-step generation"
(cd "$work/g" && "$flick" generate --backend wgpu --prompt "a large red circle moving left on black" --steps 1 \
  --checkpoint "$root/models/generator-small.safetensors" --out "$work/g/clip.gif" > "$out/gen.out" 2>&1)
sleep 1 # cubecl's logger writes from a background task
python3 "$root/scripts/profile_summary.py" "$work/p/train.log" --top 40 > "$out/train-profile.md"
python3 "$root/scripts/profile_summary.py" "$work/g/gen.log" --top 25 > "$out/gen-profile.md"
xz -T0 -c "$work/p/train.log" > "$out/train-profile.log.xz"
xz -T0 -c "$work/g/gen.log" > "$out/gen-profile.log.xz"
echo "profile-gpu: wrote $out/train-profile.md and $out/gen-profile.md"
