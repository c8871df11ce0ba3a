"""How busy the GPU is during a training run: samples NVML's utilisation (the share of the last
sample period in which a kernel was running) while a run's metrics.jsonl grows, then reports the
mean over the steady-state steps (from the second logged step to the last).

    python3 scripts/gpu_busy.py sample RUN_DIR SAMPLES.csv   # until killed (SIGTERM)
    python3 scripts/gpu_busy.py report SAMPLES.csv           # prints one JSON line

Needs nvidia-ml-py (pynvml). Each sample: epoch seconds, GPU utilisation %, memory-controller
utilisation %, lines in RUN_DIR/metrics.jsonl.
"""

import json
import signal
import sys
import time
from pathlib import Path


def sample(run_dir, csv_path, period=0.05):
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    metrics = Path(run_dir) / "metrics.jsonl"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with open(csv_path, "w") as f:
        f.write("t,gpu,mem,lines\n")
        while not stop:
            u = pynvml.nvmlDeviceGetUtilizationRates(h)
            try:
                lines = metrics.read_text().count("\n")
            except OSError:
                lines = 0
            f.write(f"{time.time():.3f},{u.gpu},{u.memory},{lines}\n")
            f.flush()
            time.sleep(period)


def report(csv_path):
    rows = []
    for line in Path(csv_path).read_text().splitlines()[1:]:
        t, g, m, n = line.split(",")
        rows.append((float(t), int(g), int(m), int(n)))
    if not rows:
        print(json.dumps({"error": "no samples"}))
        return
    last = max(r[3] for r in rows)
    # Steady state: after the second metrics line (first logged steps, one-off work) was
    # written, until the last one was.
    window = [r for r in rows if r[3] >= 2 and r[3] < last]
    out = {"samples": len(rows), "metrics_lines": last}
    if window:
        out.update(
            window_s=round(window[-1][0] - window[0][0], 2),
            window_samples=len(window),
            gpu_busy_pct=round(sum(r[1] for r in window) / len(window), 1),
            mem_busy_pct=round(sum(r[2] for r in window) / len(window), 1),
        )
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
