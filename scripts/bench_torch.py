"""PyTorch eager baselines for `flick bench`: the same operations, shapes and dtype (f32) as the
kernel rows of `flick bench`, on CUDA (or the CPU if no GPU). Prints a markdown table and
writes bench_torch.json next to --out.

    python3 scripts/bench_torch.py --batch 32 --out runs/bench
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F


def timed(fn, device, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="runs/bench")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 as in the WGSL kernels
    torch.backends.cudnn.allow_tf32 = False
    b, h, n, dh, m = a.batch, 4, 256, 32, 96
    g = torch.Generator(device=device).manual_seed(0)
    r = lambda *s, grad=False: torch.randn(*s, device=device, generator=g).requires_grad_(grad)
    q, k, v = r(b, h, n, dh), r(b, h, n, dh), r(b, h, n, dh)
    kc, vc = r(b, h, m, dh), r(b, h, m, dh)
    bias = torch.zeros(b, 1, 1, m, device=device)
    bias[..., 40:] = -1e4
    scale = 1 / math.sqrt(dh)

    def textbook(q, k, v, bias=None):
        s = q @ k.transpose(-1, -2) * scale
        if bias is not None:
            s = s + bias
        return torch.softmax(s, -1) @ v

    rows = []

    def row(name, fn, flops=None):
        t = timed(fn, device)
        rows.append({"name": name, "s": t, "gflops": (flops / t / 1e9) if flops else None})
        print(f"torch {name}: {t * 1e3:.3f} ms", flush=True)

    fl = lambda nq, nk: 4.0 * b * h * nq * nk * dh
    with torch.no_grad():
        row("attention forward (self), eager textbook", lambda: textbook(q, k, v), fl(n, n))
        row("attention forward (self), F.scaled_dot_product_attention", lambda: F.scaled_dot_product_attention(q, k, v), fl(n, n))
        row("attention forward (cross, padded), eager textbook", lambda: textbook(q, kc, vc, bias), fl(n, m))
        row("attention forward (cross, padded), F.sdpa", lambda: F.scaled_dot_product_attention(q, kc, vc, attn_mask=bias), fl(n, m))
    qa, ka, va, go = r(b, h, n, dh, grad=True), r(b, h, n, dh, grad=True), r(b, h, n, dh, grad=True), r(b, h, n, dh)

    def train(f):
        o = f(qa, ka, va)
        (o * go).sum().backward()

    row("attention forward+backward (self), eager textbook", lambda: train(textbook), 3.5 * fl(n, n))
    row("attention forward+backward (self), F.sdpa", lambda: train(F.scaled_dot_product_attention), 3.5 * fl(n, n))
    d = h * dh
    x, shift, sc = r(b, n, d), r(b, d), r(b, d)
    with torch.no_grad():
        row("adaLN forward, eager", lambda: F.layer_norm(x, (d,), eps=1e-6) * (1 + sc[:, None]) + shift[:, None])
    xa, sha, sca, gy = r(b, n, d, grad=True), r(b, d, grad=True), r(b, d, grad=True), r(b, n, d)

    def adaln_train():
        y = F.layer_norm(xa, (d,), eps=1e-6) * (1 + sca[:, None]) + sha[:, None]
        (y * gy).sum().backward()

    row("adaLN forward+backward, eager", adaln_train)
    # The pixel-resolution convolutions (cuDNN; f32, TF32 off), as in flick bench.
    for label, ci, co, kt in [("head 1×3×3, 32→16", 32, 16, 1), ("stem 3×3×3, 3→16", 3, 16, 3)]:
        t, hw = 8, 32
        flops = 2.0 * b * co * t * hw * hw * ci * kt * 9
        cx, cw, cb = r(b, ci, t, hw, hw), r(co, ci, kt, 3, 3), r(co)
        pad = (kt // 2, 1, 1)
        with torch.no_grad():
            row(f"conv forward ({label}), cuDNN", lambda: F.conv3d(cx, cw, cb, padding=pad), flops)
        cxa, cwa, cba, cg = r(b, ci, t, hw, hw, grad=True), r(co, ci, kt, 3, 3, grad=True), r(co, grad=True), r(b, co, t, hw, hw)

        def conv_train():
            (F.conv3d(cxa, cwa, cba, padding=pad) * cg).sum().backward()

        row(f"conv forward+backward ({label}), cuDNN", conv_train, 3 * flops)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    md = f"# PyTorch {torch.__version__} eager on {name}, f32 (TF32 off)\n\n| operation | ms | GFLOP/s |\n|---|---|---|\n"
    for x in rows:
        md += f"| {x['name']} | {x['s'] * 1e3:.3f} | {x['gflops']:.1f} |\n" if x["gflops"] else f"| {x['name']} | {x['s'] * 1e3:.3f} | — |\n"
    print(md)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_torch.json"), "w") as f:
        json.dump({"device": name, "torch": torch.__version__, "batch": b, "rows": rows}, f, indent=2)
    with open(os.path.join(a.out, "bench_torch.md"), "w") as f:
        f.write(md)


if __name__ == "__main__":
    main()
