"""Where PyTorch spends the twin's training step: `torch.profiler` over a few steps of the
benchmark's step (`bench.py`), each operator's self time per step, largest first — the
reference to hold a `perf` profile of `flick bench --train` against.

    python step_profile.py --teacher T.safetensors [--batch 16] [--threads N] [--steps 3] [--rows 30]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import flick_twin as tw  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=30)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    model, cfg, _ = tw.load_flick(a.teacher, device)
    step, _, _ = bench.training_step(model, model, cfg, a.batch, device)
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    plain = (time.perf_counter() - t0) * 1e3 / a.steps
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) / 1e3 / a.steps
    print(f"batch {a.batch}, {torch.get_num_threads()} threads: {plain:.1f} ms a step "
          f"({total:.1f} ms of operator self time under the profiler)")
    print(f"{'operator':<60} {'ms/step':>9} {'calls/step':>11}")
    for e in rows[: a.rows]:
        print(f"{e.key[:60]:<60} {e.self_cpu_time_total / 1e3 / a.steps:9.1f} "
              f"{e.count / a.steps:11.1f}")


if __name__ == "__main__":
    main()
