"""Check the PyTorch twin against what Flick computed (`trainer/tests/torch_twin.rs` writes the
cases): `check.py DIR NAME...` loads `DIR/NAME.model.safetensors` into the twin, runs it on the
inputs of `DIR/NAME.case.safetensors` and compares. Prints one `ok NAME …` line per case that
agrees; exits 1 if any does not.

Tolerances (CPU, f32): every output within 1e-4 (absolute, or relative where |v| > 1); the loss
and the global gradient norm within 1e-3 relative; the whole gradient vector within 1e-3 of its
norm (‖g_flick − g_twin‖ / ‖g_flick‖).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flick_twin as tw  # noqa: E402


def main() -> int:
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    # Reference arithmetic: no TF32 anywhere.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    folder = Path(sys.argv[1])
    bad = 0
    for name in sys.argv[2:]:
        model, cfg, _ = tw.load_flick(str(folder / f"{name}.model.safetensors"))
        with safe_open(str(folder / f"{name}.case.safetensors"), "pt") as f:
            meta = f.metadata()
            fx = {k: f.get_tensor(k) for k in f.keys()}
        prompts = json.loads(meta["prompts"])
        levels = int(meta["levels"])
        problems = []

        with torch.no_grad():
            text = model.encode_text(prompts)
            xs = [fx[f"x.{r}"] for r in range(levels)]
            if isinstance(model, tw.NestedUnet):
                outs = model.forward_levels(xs, fx["t"], text)
            else:
                outs = [model(xs[0], fx["t"], text)]
        worst_out = 0.0
        for r, v in enumerate(outs):
            want = fx[f"out.{r}"]
            err = ((v - want).abs() / want.abs().clamp_min(1.0)).max().item()
            worst_out = max(worst_out, err)
            if not err <= 1e-4:
                problems.append(f"output {r} differs by {err:.2e} (> 1e-4)")

        model.zero_grad()
        eps = [fx[f"eps.{r}"] for r in range(levels)]
        loss = tw.flow_loss(model, fx["x0"], eps, fx["t_loss"], model.encode_text(prompts))
        loss.backward()
        want_loss = float(meta["loss"])
        loss_err = abs(loss.item() - want_loss) / abs(want_loss)
        if not loss_err <= 1e-3:
            problems.append(f"loss {loss.item():.6e} vs Flick's {want_loss:.6e}")

        mine = {k: v.grad for k, v in model.named_parameters()}
        theirs = tw.flick_tensors(model)  # names only; values replaced below
        diff_sq, norm_sq, twin_sq = 0.0, 0.0, 0.0
        worst = ("", 0.0)
        for flick_name in theirs:
            torch_name = tw._torch_name(flick_name)
            g = mine[torch_name]
            g = torch.zeros_like(model.get_parameter(torch_name)) if g is None else g
            if torch_name in tw._linear_weights(model):
                g = g.t()
            g = g.reshape(-1)
            want = fx.get(f"grad.{flick_name}", torch.zeros_like(g))
            d = (g - want).pow(2).sum().item()
            diff_sq += d
            norm_sq += want.pow(2).sum().item()
            twin_sq += g.pow(2).sum().item()
            if d > worst[1]:
                worst = (flick_name, d)
        norm = norm_sq**0.5
        norm_err = abs(twin_sq**0.5 - float(meta["grad_norm"])) / float(meta["grad_norm"])
        vec_err = diff_sq**0.5 / norm
        if not norm_err <= 1e-3:
            problems.append(f"gradient norm {twin_sq ** 0.5:.6e} vs Flick's {meta['grad_norm']}")
        if not vec_err <= 1e-3:
            problems.append(
                f"gradients differ by {vec_err:.2e} of their norm (most in {worst[0]})"
            )
        summary = (
            f"{name} ({cfg['kind']}): output {worst_out:.1e}, loss {loss_err:.1e}, "
            f"grad norm {norm_err:.1e}, grad vector {vec_err:.1e}"
        )
        if problems:
            bad += 1
            print(f"FAIL {summary}: " + "; ".join(problems))
        else:
            print(f"ok {summary}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
