#!/usr/bin/env bash
# Flick's training step and one-step generation against its PyTorch twin, side by side on one
# machine, into one table (OUT/train.md, rows in OUT/train.jsonl):
#
#   bash scripts/bench-train.sh [OUT] [--gpu]
#
# CPU (default): `flick bench --train --backend cpu` (burn's flex backend; 1 and 2 data-parallel
# workers on the machine's cores) against PyTorch eager with as many threads as cores; the step
# also with `--no-fused` (burn's own convolution and attention: the "before").
# --gpu: Flick on wgpu (Vulkan), with and without burn's kernel fusion, against PyTorch CUDA
# eager and torch.compile.
# Needs the build (scripts/build.sh; or FLICK=path/to/flick) and PyTorch (scripts/setup.sh test;
# or FLICK_TORCH_PYTHON=python with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/bench-train}"
gpu=0
[ "${2:-}" = "--gpu" ] && gpu=1
py="${FLICK_TORCH_PYTHON:-$HOME/.cache/flick/torch-venv/bin/python}"
"$py" -c 'import torch' 2>/dev/null || { echo "no PyTorch at $py: run bash scripts/setup.sh test" >&2; exit 1; }
if [ -n "${FLICK:-}" ]; then flick=$(readlink -f "$FLICK"); else
  bash scripts/build.sh
  flick="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}/debug/flick"
fi
export FLICK_MODELS="${FLICK_MODELS:-$PWD/models}"
threads=$(nproc)
mkdir -p "$out"
rm -f "$out/train.jsonl"
batches="${FLICK_BENCH_BATCHES:-16,64}"
steps="${FLICK_BENCH_STEPS:-5}"
if [ $gpu = 1 ]; then
  "$flick" bench --train --backend wgpu --out "$out" --train-batches "$batches" --train-workers 1 --train-steps "$steps"
  # Before: burn's composed operations instead of Flick's kernels (`--no-fused`), batch 16.
  "$flick" --no-fused bench --train --backend wgpu --out "$out" --train-batches 16 --train-workers 1 \
    --train-steps "$steps" --only "training step"
  # burn's kernel fusion off (each queued operation its own kernel), for the with/without rows
  BURN_FUSION_MAX_EXPLORATIONS=0 "$flick" bench --train --backend wgpu --out "$out" --train-batches "$batches" \
    --train-workers 1 --train-steps "$steps" --only "training step,optimizer"
  "$py" scripts/torch_twin/bench.py --device cuda --teacher models/teacher-small.safetensors \
    --generator models/generator-small.safetensors --out "$out" --batches "$batches" --steps "$steps" --compile
else
  "$flick" bench --train --backend cpu --out "$out" --train-batches "$batches" --train-workers "1,$threads" --train-steps "$steps"
  # Before: burn's own convolution and attention (`--no-fused`), the step at batch 16.
  "$flick" --no-fused bench --train --backend cpu --out "$out" --train-batches 16 --train-workers "$threads" \
    --train-steps "$steps" --only "training step"
  "$py" scripts/torch_twin/bench.py --device cpu --threads "$threads" --teacher models/teacher-small.safetensors \
    --generator models/generator-small.safetensors --out "$out" --batches "$batches" --steps "$steps"
fi
"$py" scripts/torch_twin/table.py "$out" "teacher-small training step and one-step generation ($(uname -m), $threads cores)"
