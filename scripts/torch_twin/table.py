"""Write DIR/train.md from DIR/train.jsonl (rows of `flick bench --train` and the twin's
`bench.py`): per measurement, each framework's median time, clips/s and achieved GFLOP/s (the
training step's FLOPs as the twin counted them, the same number for both), and Flick's best
configuration against PyTorch eager on the same device."""

import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
title = sys.argv[2] if len(sys.argv) > 2 else "training step and one-step generation"
rows = [json.loads(l) for l in (folder / "train.jsonl").read_text().splitlines() if l.strip()]
flops = {r["batch"]: r["flops"] for r in rows if r.get("flops")}
lines = [
    f"# Flick vs PyTorch: {title}",
    "",
    "Medians of timed steps after untimed warm-up, each framework on the same device in one run "
    "(`scripts/bench-train.sh`). GFLOP/s = the step's FLOPs (counted once by PyTorch's "
    "FlopCounterMode: matmuls, convolutions, attention; forward + backward) / median time. "
    "Ratio = PyTorch eager's time / Flick's best time (> 1: Flick is faster). Rows "
    "\"flick (burn's operations)\" are Flick with `--no-fused`: burn's own operations where "
    "Flick has its own (the kernels on a GPU; the convolution, attention, group norm, GELU and SiLU on the CPU) — the "
    "\"before\" of those operations, measured in the same run.",
    "",
    "| what | batch | framework | device | workers | median ms | fastest ms | clips/s | GFLOP/s | loss |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in sorted(rows, key=lambda r: (r["what"] != "training step", r["what"], r["batch"], r["framework"], r["workers"])):
    f = flops.get(r["batch"]) if r["what"] == "training step" else None
    gf = f"{f / (r['median_ms'] / 1e3) / 1e9:.1f}" if f else "–"
    loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "–"
    cps = f"{r['clips_per_s']:.1f}" if r["clips_per_s"] else "–"
    lines.append(
        f"| {r['what']} | {r['batch'] or '–'} | {r['framework']} | {r['device']} | {r['workers']} | "
        f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {cps} | {gf} | {loss} |"
    )
lines += [
    "",
    "| what | batch | Flick's best (how) | PyTorch eager | ratio | with burn's operations | ratio |",
    "|---|---|---|---|---|---|---|",
]
keys = sorted({(r["what"], r["batch"]) for r in rows}, key=lambda k: (k[0] != "training step", k))
for what, b in keys:
    here = [r for r in rows if r["what"] == what and r["batch"] == b]
    before = [r for r in here if r["framework"].startswith("flick (burn's operations")]
    fl = [r for r in here if r["framework"].startswith("flick") and r not in before]
    pt = [r for r in here if r["framework"] == "pytorch eager"]
    if not fl or not pt:
        continue
    best = min(fl, key=lambda r: r["median_ms"])
    how = f"{best['workers']} worker{'s' if best['workers'] > 1 else ''}" if best["framework"] == "flick" else best["framework"][6:].strip("()")
    old = min(before, key=lambda r: r["median_ms"]) if before else None
    lines.append(
        f"| {what} | {b or '–'} | {best['median_ms']:.1f} ms ({how}) | {pt[0]['median_ms']:.1f} ms | "
        f"{pt[0]['median_ms'] / best['median_ms']:.2f} | "
        + (f"{old['median_ms']:.1f} ms | {pt[0]['median_ms'] / old['median_ms']:.2f} |" if old else "– | – |")
    )
(folder / "train.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
