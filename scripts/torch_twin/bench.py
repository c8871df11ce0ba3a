"""The PyTorch side of `scripts/bench-train.sh`: the twin's training step and one-step
generation, timed with the protocol of `flick bench --train` (`trainer/src/bench_train.rs`).

    python bench.py --teacher T.safetensors --generator G.safetensors --out DIR
                    [--device cpu|cuda] [--threads N] [--batches 16,64] [--steps 5] [--compile]

A training step: text encoding, forward, flow-matching loss, backward, the global-norm clip
(`clip_grad_norm_`), AdamW (PyTorch's default multi-tensor implementation) and the EMA update
(`_foreach_lerp_`), the loss read back to the host (as Flick reads it). Also counts the step's
floating-point operations once (`FlopCounterMode`: matmuls, convolutions, attention) for the
table's GFLOP/s, the same count for both frameworks. Appends rows to DIR/train.jsonl.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flick_twin as tw  # noqa: E402

CAPTIONS = [
    "a large red circle moving left on black",
    "a small yellow square moving up on navy",
    "a large cyan triangle orbiting clockwise on gray",
    "a large white cross falling on dark green",
]


def prompts(n):
    return ["" if i % 10 == 9 else CAPTIONS[i % 4] for i in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(device, warmup, steps, step):
    for _ in range(warmup):
        step()
        sync(device)
    times, loss = [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        loss += step()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0], loss / steps


def batch_for(cfg, b, device):
    g = torch.Generator().manual_seed(7)
    sizes = [(cfg["height"] >> r, cfg["width"] >> r) for r in range(levels_of(cfg))]
    x0 = torch.rand(b, 3, cfg["frames"], cfg["height"], cfg["width"], generator=g) * 2 - 1
    eps = [torch.randn(b, 3, cfg["frames"], h, w, generator=g) for h, w in sizes]
    t = (torch.arange(b, dtype=torch.float32) + 0.5) / b
    return x0.to(device), [e.to(device) for e in eps], t.to(device)


def levels_of(cfg):
    return len(cfg["nested"]["outer_channels"]) + 1 if cfg.get("kind") == "nested" else 1


def name_of(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def ops(device):
    """`(name, forward, leaves)` of each operation of `bench_train.rs`'s `op_rows`, batch 16."""
    b = 16

    def leaf(*shape):
        return torch.randn(*shape, device=device, requires_grad=True)

    lin = torch.nn.Linear(128, 512).to(device)
    x = leaf(b * 256, 128)
    q, k, v = leaf(b, 4, 256, 32), leaf(b, 4, 256, 32), leaf(b, 4, 256, 32)
    t, sh, sc = leaf(b, 256, 128), leaf(b, 128), leaf(b, 128)
    stem = torch.nn.Conv3d(3, 16, 3, padding=1).to(device)
    clip = leaf(b, 3, 8, 32, 32)
    conv = torch.nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1)).to(device)
    feat = leaf(b, 16, 8, 32, 32)
    hidden = leaf(b, 256, 512)
    F = torch.nn.functional
    return [
        ("linear [4096,128]→512", lambda: lin(x), [x, *lin.parameters()]),
        ("attention [16,4,256,32]", lambda: F.scaled_dot_product_attention(q, k, v), [q, k, v]),
        ("adaLN [16,256,128]", lambda: tw.adaln(t, sh, sc), [t, sh, sc]),
        ("conv 3→16 3×3×3 [16,3,8,32,32]", lambda: stem(clip), [clip, *stem.parameters()]),
        ("conv 16→16 1×3×3 [16,16,8,32,32]", lambda: conv(feat), [feat, *conv.parameters()]),
        ("group norm [16,16,8,32,32]", lambda: tw.group_norm(feat, 8), [feat]),
        ("GELU [16,256,512]", lambda: F.gelu(hidden), [hidden]),
        ("SiLU [16,16,8,32,32]", lambda: F.silu(feat), [feat]),
    ]


def training_step(model, fn, cfg, b, device):
    """The benchmarked step over `model` at batch `b` (its forward through `fn`: the model, or
    its torch.compile'd form): text encoding, forward, flow-matching loss, backward, the
    global-norm clip, AdamW and the EMA update, the loss read back. Returns
    `(step, loss_of, optimizer)`."""
    model.train()
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    x0, eps, t = batch_for(cfg, b, device)
    ps = prompts(b)

    def loss_of():
        text = model.encode_text(ps)
        if isinstance(model, tw.NestedUnet):
            return tw.flow_loss(model, x0, eps, t, text)
        xt, target = tw.noise(x0, eps[0], t)
        return (fn(xt, t, text) - target).pow(2).mean()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.999)
        return loss.item()

    return step, loss_of, opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--generator", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also torch.compile'd rows")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "train.jsonl"

    def emit(row):
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    modes = ["eager"] + (["compile"] if a.compile else [])
    for b in [int(x) for x in a.batches.split(",")]:
        for mode in modes:
            model, cfg, _ = tw.load_flick(a.teacher, device)
            fn = torch.compile(model) if mode == "compile" else model
            step, loss_of, opt = training_step(model, fn, cfg, b, device)
            if mode == "compile":
                # Compiled in the first call: timed here so the table can say what it cost.
                t0 = time.perf_counter()
                try:
                    step()
                except Exception as e:  # a compiler failure costs this row, not the rest
                    print(f"torch.compile failed at batch {b}: {e!r}", file=sys.stderr, flush=True)
                    continue
                print(f"torch.compile: first step at batch {b} took {time.perf_counter() - t0:.1f} s",
                      flush=True)

            flops = None
            if mode == "eager":
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False)
                with counter:
                    loss_of().backward()
                opt.zero_grad(set_to_none=True)
                flops = counter.get_total_flops()
            med, fastest, loss = time_steps(device, a.warmup, a.steps, step)
            emit(
                {
                    "framework": "pytorch" + (" compile" if mode == "compile" else " eager"),
                    "device": name,
                    "what": "training step",
                    "batch": b,
                    "workers": 1,
                    "median_ms": med,
                    "min_ms": fastest,
                    "clips_per_s": b / (med / 1e3),
                    "steps": a.steps,
                    "loss": loss,
                    "flops": flops,
                }
            )
            del model, opt, step, loss_of

    # The step's operations one by one (the same list as `flick bench --train`).
    for op_name, fn, leaves in ops(device):

        def run_op():
            for t in leaves:
                t.grad = None
            y = fn()
            # Σ y·y with one factor held constant: the output's gradient is y itself (not a
            # constant), for one multiply and one sum (a sine here cost more than some ops).
            (y * y.detach()).sum().backward()
            return 0.0

        med, fastest, _ = time_steps(device, a.warmup, a.steps, run_op)
        emit(
            {
                "framework": "pytorch eager",
                "device": name,
                "what": f"op: {op_name}",
                "batch": 16,
                "workers": 1,
                "median_ms": med,
                "min_ms": fastest,
                "clips_per_s": 0.0,
                "steps": a.steps,
                "loss": None,
                "flops": None,
            }
        )

    # The update alone: clip, AdamW and the EMA over the teacher's parameters, fixed gradients.
    model, cfg, _ = tw.load_flick(a.teacher, device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.999)
        return 0.0

    med, fastest, _ = time_steps(device, a.warmup, a.steps, update)
    emit(
        {
            "framework": "pytorch eager",
            "device": name,
            "what": "optimizer + EMA update",
            "batch": 0,
            "workers": 1,
            "median_ms": med,
            "min_ms": fastest,
            "clips_per_s": 0.0,
            "steps": a.steps,
            "loss": None,
            "flops": None,
        }
    )
    del model, opt, ema, params

    gen, cfg, meta = tw.load_flick(a.generator, device)
    gen.eval()
    for n in (1, 16):
        ps = prompts(n)
        shape = (n, 3, cfg["frames"], cfg["height"], cfg["width"])

        def one():
            with torch.inference_mode():
                x = torch.randn(shape, device=device)
                t = torch.ones(n, device=device)
                v = gen(x, t, gen.encode_text(ps))
                clips = (x - v).clamp(-1, 1)
                pixels = ((clips + 1) * 127.5).round().to(torch.uint8).cpu()
            return float(pixels.shape[0])

        med, fastest, _ = time_steps(device, max(a.warmup, 1), a.steps, one)
        emit(
            {
                "framework": "pytorch eager",
                "device": name,
                "what": "one-step generation",
                "batch": n,
                "workers": 1,
                "median_ms": med,
                "min_ms": fastest,
                "clips_per_s": n / (med / 1e3),
                "steps": a.steps,
                "loss": None,
                "flops": None,
            }
        )


if __name__ == "__main__":
    main()
