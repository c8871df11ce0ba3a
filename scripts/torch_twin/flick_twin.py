"""PyTorch twin of Flick's video models: the same architectures as `flick-core`'s `VideoDit`,
`VideoUnet` and `NestedUnet` (with their text encoder), built from a Flick checkpoint's config
and loading its `.safetensors` weights by tensor name.

Flick's layouts and PyTorch's differ in two places, handled in `load_flick`/`flick_tensors`:
burn stores a linear layer's weight as `[in, out]` (PyTorch: `[out, in]`), and a layer norm's
parameters as `gamma`/`beta` (PyTorch: `weight`/`bias`). Convolution and embedding weights share
PyTorch's layout.

Every formula mirrors the Rust source it names; `check.py` holds the two to 1e-4 on fixed inputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS, EOS, VOCAB = 0, 1, 2, 259
LN_EPS = 1e-6  # Flick's affine-free layer/group norms (`layers::layer_norm`, `LN_EPS`)
CLEAN_T_MIN = 0.05


# ---------------------------------------------------------------- text (core/src/text.rs)


def normalize(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


def tokenize(prompt: str, max_len: int) -> tuple[list[int], int]:
    data = normalize(prompt).encode("utf-8")
    ids = [BOS] + [b + 3 for b in data[: max_len - 2]] + [EOS]
    n = len(ids)
    return ids + [PAD] * (max_len - n), n


@dataclass
class TextContext:
    tokens: torch.Tensor  # [B, L, dim]
    bias: torch.Tensor  # [B, L]: 0 real, -1e4 padding
    pooled: torch.Tensor  # [B, dim]


class Attention(nn.Module):
    """`layers::Attention`: softmax(q·kᵀ/√dh + bias)·v over heads."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(context_dim, dim)
        self.v = nn.Linear(context_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x, context, bias=None):
        b, n, d = x.shape
        m = context.shape[1]
        h = self.heads

        def split(t, length):
            return t.reshape(b, length, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x), n), split(self.k(context), m), split(self.v(context), m)
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TextLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, 4 * dim)


class TextEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim = cfg["dim"]
        self.max_len = cfg["max_len"]
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.zeros(self.max_len, dim))
        k = cfg.get("conv_kernel", 0)
        self.conv = nn.Conv1d(dim, dim, k, padding=k // 2) if k > 0 else None
        self.layers = nn.ModuleList(TextLayer(dim, cfg["heads"]) for _ in range(cfg["depth"]))
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, prompts: list[str]) -> TextContext:
        dev = self.pos.device
        rows = [tokenize(p, self.max_len) for p in prompts]
        ids = torch.tensor([r[0] for r in rows], dtype=torch.long, device=dev)
        lens = torch.tensor([r[1] for r in rows], device=dev)
        j = torch.arange(self.max_len, device=dev)[None, :]
        real = j < lens[:, None]
        mask = real.float() / lens[:, None].float()
        bias = torch.where(real, 0.0, -1e4).float()
        e = self.embed(ids)
        if self.conv is not None:
            e = e + self.conv(e.transpose(1, 2)).transpose(1, 2)
        x = e + self.pos[None]
        for layer in self.layers:
            h = layer.norm1(x)
            x = x + layer.attn(h, h, bias)
            x = x + layer.mlp(layer.norm2(x))
        tokens = self.norm(x)
        return TextContext(tokens, bias, (tokens * mask[:, :, None]).sum(1))


# ---------------------------------------------------------------- shared layers (layers.rs, mod.rs)


def layer_norm(x):
    mean = x.mean(-1, keepdim=True)
    c = x - mean
    return c / (c.pow(2).mean(-1, keepdim=True) + LN_EPS).sqrt()


def adaln(x, shift, scale):
    return layer_norm(x) * (scale[:, None] + 1.0) + shift[:, None]


def group_norm(x, groups: int):
    b, c, t, h, w = x.shape
    g = x.reshape(b, groups, -1)
    mean = g.mean(2, keepdim=True)
    cen = g - mean
    return (cen / (cen.pow(2).mean(2, keepdim=True) + LN_EPS).sqrt()).reshape(b, c, t, h, w)


def groups_for(c: int) -> int:
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


def timestep_embedding(t, dim: int = 256):
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    args = (t * 1000.0)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], 1)


def condition(fc1, fc2, pool, t, text: TextContext):
    temb = fc2(F.silu(fc1(timestep_embedding(t))))
    return F.silu(temb + pool(text.pooled))


def factorised_positions(t: int, h: int, w: int, dim: int, device=None):
    """`layers::factorised_positions`: `[t·h·w, dim]`."""
    dt = (dim // 4) & ~1
    dh = ((dim - dt) // 2) & ~1
    dw = dim - dt - dh

    def code(pos, width):
        half = width // 2
        i = torch.arange(half, dtype=torch.float32)
        f = torch.exp(-math.log(100.0) * i / max(half, 1))
        a = pos.float()[:, None] * f[None]
        out = torch.stack([a.sin(), a.cos()], -1).reshape(len(pos), 2 * half)
        if width % 2 == 1:
            out = torch.cat([out, torch.zeros(len(pos), 1)], 1)
        return out

    ti, yi, xi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    p = torch.cat([code(ti.flatten(), dt), code(yi.flatten(), dh), code(xi.flatten(), dw)], 1)
    return p.to(device)


def preconditioning(t, sigma: float):
    """`model::Preconditioning`: `(c_in, c_skip, c_out, t)` as `[B, 1, 1, 1, 1]`."""
    s2 = sigma * sigma
    tt = t.reshape(-1, 1, 1, 1, 1)
    om = 1.0 - tt
    var_x = om.pow(2) * s2 + tt.pow(2)
    cov = tt - om * s2
    c_in = 1.0 / var_x.sqrt()
    c_skip = cov / var_x
    c_out = (1.0 + s2 - cov.pow(2) / var_x).clamp_min(1e-8).sqrt()
    return c_in, c_skip, c_out, tt


def precond_output(pre, prediction: str, x, f):
    _, c_skip, c_out, tt = pre
    if prediction == "velocity":
        return x * c_skip + f * c_out
    return (x - f) / tt.clamp_min(CLEAN_T_MIN)


def conv3d(i, o, k, stride=1, pad=None):
    if pad is None:
        pad = tuple(kk // 2 for kk in k)
    return nn.Conv3d(i, o, tuple(k), stride=stride, padding=pad)


class ConvBlock(nn.Module):
    """`layers::ConvBlock`."""

    def __init__(self, c: int, cond_dim: int):
        super().__init__()
        self.ada = nn.Linear(cond_dim, 2 * c)
        self.conv1 = conv3d(c, c, (1, 3, 3))
        self.conv2 = conv3d(c, c, (1, 3, 3))
        self.groups = groups_for(c)

    def forward(self, x, c):
        b, ch = x.shape[:2]
        shift, scale = self.ada(c).chunk(2, 1)
        h = group_norm(x, self.groups) * (scale.reshape(b, ch, 1, 1, 1) + 1.0) + shift.reshape(
            b, ch, 1, 1, 1
        )
        h = self.conv1(F.silu(h))
        return x + self.conv2(F.silu(h))


class DitBlock(nn.Module):
    """`model::DitBlock` (adaLN-Zero; self-attention over `span`, cross-attention, MLP)."""

    def __init__(self, dim: int, cond_dim: int, text_dim: int, heads: int, mlp_ratio: int, span: str):
        super().__init__()
        self.ada = nn.Linear(cond_dim, 6 * dim)
        self.attn = Attention(dim, dim, heads)
        self.cross_norm = nn.LayerNorm(dim, eps=1e-5)
        self.cross = Attention(dim, text_dim, heads)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.span = span

    def forward(self, x, c, text: TextContext, grid):
        b, n, d = x.shape
        t, h, w = grid
        m = self.ada(c).chunk(6, 1)
        y = adaln(x, m[0], m[1])
        if self.span == "full":
            y = self.attn(y, y)
        elif self.span == "space":
            y = y.reshape(b * t, h * w, d)
            y = self.attn(y, y).reshape(b, n, d)
        else:
            y = y.reshape(b, t, h * w, d).transpose(1, 2).reshape(b * h * w, t, d)
            y = self.attn(y, y).reshape(b, h * w, t, d).transpose(1, 2).reshape(b, n, d)
        x = x + y * m[2][:, None]
        x = x + self.cross(self.cross_norm(x), text.tokens, text.bias)
        y = self.mlp(adaln(x, m[3], m[4]))
        return x + y * m[5][:, None]


# ---------------------------------------------------------------- the DiT (core/src/model/mod.rs)


class VideoDit(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        d, cs = cfg["dim"], cfg["stem_channels"]
        pt, ph, pw = cfg["patch"]
        self.patch = (pt, ph, pw)
        self.text = TextEncoder(cfg["text"])
        self.stem = conv3d(3, cs, (3, 3, 3)) if cs > 0 else None
        in_ch = cs if cs > 0 else 3
        self.patch_embed = nn.Conv3d(in_ch, d, self.patch, stride=self.patch)
        self.t_fc1 = nn.Linear(256, d)
        self.t_fc2 = nn.Linear(d, d)
        self.text_pool = nn.Linear(cfg["text"]["dim"], d)
        spans = []
        for i in range(cfg["depth"]):
            if cfg["attention"] == "full":
                spans.append("full")
            else:
                spans.append("space" if i % 2 == 0 else "time")
        self.blocks = nn.ModuleList(
            DitBlock(d, d, cfg["text"]["dim"], cfg["heads"], cfg["mlp_ratio"], s) for s in spans
        )
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_proj = nn.Linear(d, pt * ph * pw * (cs if cs > 0 else 3))
        self.head1 = conv3d(2 * cs, cs, (1, 3, 3)) if cs > 0 else None
        self.head2 = conv3d(cs, 3, (1, 3, 3)) if cs > 0 else None
        self.head_ada = nn.Linear(d, 2 * cs) if cs > 0 and cfg.get("head_modulation") else None
        n_conv = cfg.get("conv_blocks", 0) if cs > 0 else 0
        self.stem_blocks = nn.ModuleList(ConvBlock(cs, d) for _ in range(n_conv))
        self.head_blocks = nn.ModuleList(ConvBlock(cs, d) for _ in range(n_conv))

    def encode_text(self, prompts):
        return self.text(prompts)

    def forward(self, x, t, text: TextContext):
        b, _, frames, height, width = x.shape
        pt, ph, pw = self.patch
        pre = preconditioning(t, self.cfg["sigma_data"])
        x_in = x * pre[0]
        grid = (frames // pt, height // ph, width // pw)
        n = grid[0] * grid[1] * grid[2]
        d = self.cfg["dim"]
        c = condition(self.t_fc1, self.t_fc2, self.text_pool, t, text)
        skip = None
        if self.stem is not None:
            skip = F.silu(self.stem(x_in))
            for blk in self.stem_blocks:
                skip = blk(skip, c)
        h = self.patch_embed(skip if skip is not None else x_in)
        tokens = h.reshape(b, d, n).transpose(1, 2) + factorised_positions(*grid, d, x.device)[None]
        for blk in self.blocks:
            tokens = blk(tokens, c, text, grid)
        shift, scale = self.final_ada(c).chunk(2, 1)
        out = self.final_proj(adaln(tokens, shift, scale))
        co = out.shape[2] // (pt * ph * pw)
        out = (
            out.reshape(b, *grid, pt, ph, pw, co)
            .permute(0, 7, 1, 4, 2, 5, 3, 6)
            .reshape(b, co, frames, height, width)
        )
        if skip is not None:
            hidden = self.head1(torch.cat([out, skip], 1))
            if self.head_ada is not None:
                cs = hidden.shape[1]
                sh, sc = self.head_ada(c).chunk(2, 1)
                hidden = hidden * (sc.reshape(b, cs, 1, 1, 1) + 1.0) + sh.reshape(b, cs, 1, 1, 1)
            for blk in self.head_blocks:
                hidden = blk(hidden, c)
            f = self.head2(F.silu(hidden))
        else:
            f = out
        return precond_output(pre, self.cfg["prediction"], x, f)


# ---------------------------------------------------------------- the U-Net (core/src/model/unet.rs)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.ada1 = nn.Linear(cond_dim, 2 * c_in)
        self.conv1 = conv3d(c_in, c_out, (1, 3, 3))
        self.ada2 = nn.Linear(cond_dim, 2 * c_out)
        self.conv2 = conv3d(c_out, c_out, (1, 3, 3))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else None
        self.temporal = conv3d(c_out, c_out, (3, 1, 1))

    @staticmethod
    def agn(x, m, groups):
        b, c = x.shape[:2]
        shift, scale = m.chunk(2, 1)
        return group_norm(x, groups) * (scale.reshape(b, c, 1, 1, 1) + 1.0) + shift.reshape(
            b, c, 1, 1, 1
        )

    def forward(self, x, c):
        c_in = x.shape[1]
        h = self.conv1(F.silu(self.agn(x, self.ada1(c), groups_for(c_in))))
        c_out = h.shape[1]
        h = self.conv2(F.silu(self.agn(h, self.ada2(c), groups_for(c_out))))
        y = (self.skip(x) if self.skip is not None else x) + h
        return y + self.temporal(F.silu(group_norm(y, groups_for(c_out))))


class Level(nn.Module):
    def __init__(self, blocks, attn, sample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.sample = sample

    def forward(self, x, c, text):
        for blk in self.blocks:
            x = blk(x, c)
        return attend(self.attn, x, c, text, False) if self.attn is not None else x


def attend(block: DitBlock, x, c, text, positions: bool):
    b, ch, t, h, w = x.shape
    n = t * h * w
    tokens = x.reshape(b, ch, n).transpose(1, 2)
    if positions:
        tokens = tokens + factorised_positions(t, h, w, ch, x.device)[None]
    return block(tokens, c, text, (t, h, w)).transpose(1, 2).reshape(b, ch, t, h, w)


def upsample2(x):
    return x.repeat_interleave(2, 3).repeat_interleave(2, 4)


class VideoUnet(nn.Module):
    def __init__(self, cfg: dict, unet: dict | None = None):
        super().__init__()
        self.cfg = cfg
        u = unet or cfg["unet"]
        ch, cd, heads = u["channels"], u["cond_dim"], u["heads"]
        levels = len(ch)
        text_dim = cfg["text"]["dim"]
        self.channels = ch
        temporal = lambda l: l + u["temporal_attention_levels"] >= levels  # noqa: E731
        attn_block = lambda c, span: DitBlock(c, cd, text_dim, heads, 4, span)  # noqa: E731
        self.text = TextEncoder(cfg["text"])
        self.t_fc1 = nn.Linear(256, cd)
        self.t_fc2 = nn.Linear(cd, cd)
        self.text_pool = nn.Linear(text_dim, cd)
        self.stem = conv3d(3, ch[0], (3, 3, 3))
        down, c_in = [], ch[0]
        for l, c in enumerate(ch):
            blocks = [ResBlock(c_in if i == 0 else c, c, cd) for i in range(u["blocks"])]
            sample = conv3d(c, c, (1, 3, 3), stride=(1, 2, 2)) if l + 1 < levels else None
            down.append(Level(blocks, attn_block(c, "time") if temporal(l) else None, sample))
            c_in = c
        self.down = nn.ModuleList(down)
        bottom = ch[-1]
        self.mid_res = ResBlock(bottom, bottom, cd)
        self.mid = nn.ModuleList(attn_block(bottom, "full") for _ in range(u["mid_blocks"]))
        up, c_in = [], bottom
        for l in reversed(range(levels)):
            c = ch[l]
            blocks = [ResBlock(c_in + c if i == 0 else c, c, cd) for i in range(u["blocks"])]
            sample = conv3d(c, ch[l - 1], (1, 3, 3)) if l > 0 else None
            up.append(Level(blocks, attn_block(c, "time") if temporal(l) else None, sample))
            c_in = ch[l - 1] if l > 0 else c
        self.up = nn.ModuleList(up)
        self.head = conv3d(ch[0], 3, (1, 3, 3))

    def encode_text(self, prompts):
        return self.text(prompts)

    def condition(self, t, text):
        return condition(self.t_fc1, self.t_fc2, self.text_pool, t, text)

    def run(self, x_in, c, text, extra=None):
        """Returns `(F, top features)` (`VideoUnet::run` with the head)."""
        x = self.stem(x_in)
        if extra is not None:
            x = x + extra
        skips = []
        for level in self.down:
            x = level(x, c, text)
            skips.append(x)
            if level.sample is not None:
                x = level.sample(x)
        x = self.mid_res(x, c)
        for i, blk in enumerate(self.mid):
            x = attend(blk, x, c, text, i == 0)
        for level in self.up:
            x = level(torch.cat([x, skips.pop()], 1), c, text)
            if level.sample is not None:
                x = level.sample(upsample2(x))
        f = self.head(F.silu(group_norm(x, groups_for(self.channels[0]))))
        return f, x

    def forward(self, x, t, text):
        pre = preconditioning(t, self.cfg["sigma_data"])
        f, _ = self.run(x * pre[0], self.condition(t, text), text)
        return precond_output(pre, self.cfg["prediction"], x, f)


# ---------------------------------------------------------------- the nested U-Net (nested.rs)


def level_times(t, level: int, snr_power: float):
    if level == 0:
        return t
    k = float(1 << level) ** (-snr_power / 2.0)
    return (t * k) / (t * (k - 1.0) + 1.0)


def pool2(x):
    b, c, t, h, w = x.shape
    return x.reshape(b * c * t, h // 2, 2, w // 2, 2).mean(4).mean(2).reshape(b, c, t, h // 2, w // 2)


class OuterLevel(nn.Module):
    def __init__(self, c: int, nxt: int, cond_dim: int):
        super().__init__()
        self.stem = conv3d(3, c, (3, 3, 3))
        self.down_block = ResBlock(c, c, cond_dim)
        self.down = conv3d(c, c, (1, 3, 3), stride=(1, 2, 2))
        self.in_adapter = nn.Conv3d(c, nxt, 1)
        self.out_adapter = nn.Conv3d(nxt, c, 1)
        self.up = conv3d(c, c, (1, 3, 3))
        self.up_block = ResBlock(2 * c, c, cond_dim)
        self.head = conv3d(c, 3, (1, 3, 3))


class NestedUnet(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        nc = cfg["nested"]
        self.inner = VideoUnet(cfg)
        oc = nc["outer_channels"]
        n = len(oc)
        self.outer = nn.ModuleList(
            OuterLevel(oc[k], oc[k + 1] if k + 1 < n else cfg["unet"]["channels"][0], cfg["unet"]["cond_dim"])
            for k in range(n)
        )
        self.weights = nc["loss_weights"]
        self.snr_power = nc["snr_power"]

    def encode_text(self, prompts):
        return self.inner.text(prompts)

    def levels(self):
        return len(self.outer) + 1

    def forward_levels(self, xs, t, text):
        n = len(self.outer)
        sigma, pred = self.cfg["sigma_data"], self.cfg["prediction"]
        c = self.inner.condition(level_times(t, n, self.snr_power), text)
        pre = [preconditioning(level_times(t, r, self.snr_power), sigma) for r in range(n + 1)]
        carry, skips, downs = None, [], []
        for r, level in enumerate(self.outer):
            h = level.stem(xs[r] * pre[r][0])
            if carry is not None:
                h = h + carry
            h = level.down_block(h, c)
            skips.append(h)
            d = level.down(h)
            carry = level.in_adapter(d)
            downs.append(d)
        f, top = self.inner.run(xs[n] * pre[n][0], c, text, carry)
        outs = [precond_output(pre[n], pred, xs[n], f)]
        for r in reversed(range(n)):
            level = self.outer[r]
            d = downs.pop() + level.out_adapter(top)
            u = level.up(upsample2(d))
            h = level.up_block(torch.cat([u, skips.pop()], 1), c)
            f = level.head(F.silu(group_norm(h, groups_for(h.shape[1]))))
            outs.append(precond_output(pre[r], pred, xs[r], f))
            top = h
        return outs[::-1]

    def forward(self, x, t, text):
        # The full-size prediction alone needs every level's input: callers use forward_levels.
        raise TypeError("the nested U-Net denoises every resolution at once: use forward_levels")


# ---------------------------------------------------------------- building, loading, loss


def build(cfg: dict) -> nn.Module:
    kind = cfg.get("kind", "dit")
    return {"dit": VideoDit, "unet": VideoUnet, "nested": NestedUnet}[kind](cfg)


def levels(model) -> int:
    return model.levels() if isinstance(model, NestedUnet) else 1


def _torch_name(name: str) -> str:
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def _linear_weights(model: nn.Module) -> set[str]:
    return {f"{p}.weight" for p, m in model.named_modules() if isinstance(m, nn.Linear)}


def load_flick(path: str, device="cpu") -> tuple[nn.Module, dict, dict]:
    """A Flick checkpoint as a PyTorch model: `(model, config, metadata)`. Every tensor of the
    file must find its parameter and every parameter its tensor."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = full_config(json.loads(meta["config"]))
    model = build(cfg)
    linear = _linear_weights(model)
    state = {}
    for name, value in tensors.items():
        tn = _torch_name(name)
        state[tn] = value.t().contiguous() if tn in linear else value
    model.load_state_dict(state, strict=True)
    return model.to(device), cfg, meta


def flick_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters under Flick's names and layouts (for writing a Flick checkpoint)."""
    linear = _linear_weights(model)
    out = {}
    for name, p in model.named_parameters():
        v = p.detach().cpu()
        if name in linear:
            v = v.t()
        if name.endswith(".weight") and _is_layer_norm(model, name):
            name = name[: -len("weight")] + "gamma"
        elif name.endswith(".bias") and _is_layer_norm(model, name):
            name = name[: -len("bias")] + "beta"
        out[name] = v.contiguous()
    return out


def _is_layer_norm(model, name):
    mod = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(mod, nn.LayerNorm)


DEFAULTS = {
    "kind": "dit",
    "frames": 8,
    "height": 32,
    "width": 32,
    "patch": [1, 4, 4],
    "dim": 128,
    "depth": 6,
    "heads": 4,
    "mlp_ratio": 4,
    "stem_channels": 16,
    "attention": "full",
    "head_modulation": False,
    "conv_blocks": 0,
    "prediction": "velocity",
    "sigma_data": 0.8,
    "text": {"max_len": 96, "dim": 128, "depth": 2, "heads": 4, "conv_kernel": 0},
    "unet": {
        "channels": [32, 64, 128],
        "blocks": 1,
        "temporal_attention_levels": 2,
        "mid_blocks": 2,
        "heads": 4,
        "cond_dim": 128,
    },
    "nested": {"outer_channels": [16], "loss_weights": [1.0, 1.0], "snr_power": 1.0},
}


def full_config(cfg: dict) -> dict:
    """A checkpoint's model config with Flick's defaults for the fields it lacks
    (`ModelConfig::from_value`)."""

    def merge(base, over):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    return merge(DEFAULTS, cfg)


def noise(x0, eps, t):
    tt = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return x0 * (1.0 - tt) + eps * tt, eps - x0


def flow_loss(model, x0, eps: list, t, text):
    """`Backbone::flow_loss`: the velocity MSE (the nested U-Net: weighted over resolutions)."""
    if isinstance(model, NestedUnet):
        clean, xs, targets = x0, [], []
        for r, e in enumerate(eps):
            if r > 0:
                clean = pool2(clean)
            xt, v = noise(clean, e, level_times(t, r, model.snr_power))
            xs.append(xt)
            targets.append(v)
        preds = model.forward_levels(xs, t, text)
        total = sum(model.weights)
        loss = None
        for p, v, w in zip(preds, targets, model.weights):
            if w == 0.0:
                continue
            l = (p - v).pow(2).mean() * (w / total)
            loss = l if loss is None else loss + l
        return loss
    xt, target = noise(x0, eps[0], t)
    return (model(xt, t, text) - target).pow(2).mean()
