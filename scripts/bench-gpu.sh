#!/usr/bin/env bash
# The GPU half of the training benchmark in one go, on a machine with an NVIDIA GPU, its Vulkan
# driver and PyTorch (CUDA) but no Rust toolchain (carry a flick binary built elsewhere):
#
#   FLICK=path/to/flick bash scripts/bench-gpu.sh OUT [PARTS]
#
# PARTS (comma-separated, default all, in this order):
#   first  time to the first training step of teacher-small at batch 16 (`train-teacher`, one
#          step, process start to exit), with the autotune cache as found, then again warm
#   busy   warm training runs (batch 16 and 64) with NVML's utilisation sampled every 50 ms:
#          the device-busy fraction over the steady-state steps and the loop's clips/s
#          (scripts/gpu_busy.py); then a short run with --profile-every (host issue vs device wait)
#   bench  `flick bench --train --backend wgpu` against PyTorch CUDA eager and torch.compile
#          (scripts/bench-train.sh --gpu: fusion on/off, Flick's kernels vs burn's operations)
#   prof   per-kernel device time of a step at batch 16 (scripts/profile-gpu.sh)
# PYTHON: the python with torch and pynvml (default python3). BACKEND: cpu to try the script
# without a GPU (first only). Each part's log in OUT.
set -uo pipefail
[ $# -ge 1 ] || { sed -n 2,18p "$0"; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
out=$(mkdir -p "$1" && cd "$1" && pwd)
parts=",${2:-first,busy,bench,prof},"
flick=$(readlink -f "${FLICK:?FLICK must name a flick binary}")
py="${PYTHON:-python3}"
export FLICK_MODELS="${FLICK_MODELS:-$root/models}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "[$(date +%T)] bench-gpu: $*" | tee -a "$out/summary.txt"; }

# teacher-small's GPU config at batch $1, $2 steps, a log line every $3 steps, no checkpoints
# or samples inside the run.
config() {
  sed -e "s/^batch_size = .*/batch_size = $1/" -e "s/^steps = .*/steps = $2/" \
    -e "s/^log_every = .*/log_every = $3/" -e "s/^checkpoint_every = .*/checkpoint_every = 100000/" \
    -e "s/^warmup_steps = .*/warmup_steps = 5/" -e "s/^cooldown_steps = .*/cooldown_steps = 0/" \
    "$root/configs/teacher-small.stage10.gpu.toml" > "$work/b$1-$2.toml"
  echo "$work/b$1-$2.toml"
}
train() { # OUTDIR CONFIG [args]: train-teacher from the bundled weights
  local dir=$1 cfg=$2; shift 2
  "$flick" train-teacher --config "$cfg" --backend "${BACKEND:-wgpu}" --workers 1 --out "$dir" \
    --init-from "$root/models/teacher-small.safetensors" "$@"
}

if [[ $parts == *,first,* ]]; then
  cfg=$(config 16 1 1)
  for k in 1 2; do
    t0=$(date +%s.%N)
    train "$work/first$k" "$cfg" > "$out/first$k.log" 2>&1
    rc=$?
    say "time to first step, run $k (batch 16; autotune cache $([ $k = 1 ] && echo as found || echo warm)): $(since "$t0") s (rc $rc)"
  done
fi

if [[ $parts == *,busy,* ]]; then
  for spec in 16:200 64:100; do
    b=${spec%:*}; n=${spec#*:}
    cfg=$(config "$b" "$n" 20)
    mkdir -p "$work/busy$b"
    "$py" "$root/scripts/gpu_busy.py" sample "$work/busy$b" "$out/busy$b.csv" &
    sampler=$!
    t0=$(date +%s.%N)
    train "$work/busy$b" "$cfg" > "$out/busy$b.log" 2>&1
    rc=$?
    kill -TERM $sampler; wait $sampler
    cp "$work/busy$b/metrics.jsonl" "$out/busy$b.metrics.jsonl" 2>/dev/null
    say "training run, batch $b, $n steps: $(since "$t0") s (rc $rc); last metrics: $(tail -n 1 "$work/busy$b/metrics.jsonl" 2>/dev/null)"
    say "device busy, batch $b: $("$py" "$root/scripts/gpu_busy.py" report "$out/busy$b.csv")"
  done
  cfg=$(config 16 40 10)
  train "$work/prof16" "$cfg" --profile-every 10 > "$out/profile16.log" 2>&1
  say "step profile, batch 16: $(grep 'profile step' "$out/profile16.log" | tail -n 2)"
fi

if [[ $parts == *,bench,* ]]; then
  FLICK="$flick" FLICK_TORCH_PYTHON="$py" FLICK_BENCH_STEPS="${FLICK_BENCH_STEPS:-20}" \
    bash "$root/scripts/bench-train.sh" "$out/bench" --gpu > "$out/bench.log" 2>&1
  say "bench-train --gpu: rc $?"
fi

if [[ $parts == *,prof,* ]]; then
  FLICK="$flick" WARM_STEPS=2 STEPS=3 bash "$root/scripts/profile-gpu.sh" "$out/prof" 16 > "$out/prof.log" 2>&1
  say "profile-gpu: rc $?"
fi
say done
