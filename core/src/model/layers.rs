//! Building blocks shared by the text encoder and the video backbone: multi-head attention
//! (self and cross), the MLP, adaLN-Zero modulation, timestep and position embeddings.

use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// Multi-head attention from `x` (queries) to `context` (keys and values); self-attention when
/// they are the same tensor.
#[derive(Module, Debug)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    #[module(skip)]
    pub heads: usize,
}

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    pub dim: usize,
    /// Width of the keys/values' source (the text encoder for cross-attention).
    pub context_dim: usize,
    pub heads: usize,
    /// Zero-initialise the output projection (a new branch starts as the identity).
    #[config(default = false)]
    pub zero_out: bool,
}

impl AttentionConfig {
    pub fn init(&self, device: &Device) -> Attention {
        assert!(
            self.dim.is_multiple_of(self.heads),
            "attention width {} not divisible by {} heads",
            self.dim,
            self.heads
        );
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let mut out = LinearConfig::new(self.dim, self.dim);
        if self.zero_out {
            out = out.with_initializer(Initializer::Zeros);
        }
        Attention {
            q: lin(self.dim, self.dim),
            k: lin(self.context_dim, self.dim),
            v: lin(self.context_dim, self.dim),
            out: out.init(device),
            heads: self.heads,
        }
    }
}

impl Attention {
    /// # Shapes
    /// - `x`: `[B, N, dim]`, `context`: `[B, M, context_dim]`
    /// - `bias`: optional additive key bias `[B, M]` (−1e4 at padding keys, 0 elsewhere)
    /// - returns `[B, N, dim]`
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>, bias: Option<Tensor<2>>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let m = context.dims()[1];
        let h = self.heads;
        let split = |t: Tensor<3>, len: usize| t.reshape([b, len, h, d / h]).swap_dims(1, 2); // [B, H, len, dh]
        let q = split(self.q.forward(x), n);
        let k = split(self.k.forward(context.clone()), m);
        let v = split(self.v.forward(context), m);
        // Flick's fused kernel on GPUs, its per-head CPU attention on the CPU (burn's attention
        // with --no-fused).
        let y = flick_shaders::attention(q, k, v, bias); // [B, H, N, dh]
        self.out.forward(y.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// Two-layer GELU MLP.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(dim, hidden).init(device),
            fc2: LinearConfig::new(hidden, dim).init(device),
        }
    }

    /// `[B, N, dim] → [B, N, dim]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(crate::shaders::gelu(self.fc1.forward(x)))
    }
}

/// Layer norm without learned affine parameters (adaLN supplies scale and shift).
/// `[.., d] → [.., d]`
pub fn layer_norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mean = x.clone().mean_dim(D - 1);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(D - 1);
    centred / (var + 1e-6).sqrt()
}

/// The epsilon of every `LayerNorm` in Flick's models (`LayerNormConfig`'s default; burn keeps the
/// module's own private).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// A `LayerNorm` module's forward over the last axis of `[B, N, d]`: on a GPU through the fused
/// adaLN kernels (`flick_shaders::layer_norm_affine`: the learned scale and shift broadcast over
/// the batch), elsewhere burn's own.
pub fn layer_norm_module(norm: &burn::nn::LayerNorm, x: Tensor<3>) -> Tensor<3> {
    let beta = norm.beta.as_ref().map(|b| b.val());
    match flick_shaders::layer_norm_affine(x.clone(), norm.gamma.val(), beta, LAYER_NORM_EPS) {
        Some(y) => y,
        None => norm.forward(x),
    }
}

/// adaLN: `modulate(layer_norm(x), shift, scale)`, fused into one kernel on GPUs (see
/// `flick_shaders::adaln`). `x: [B, N, d]`, `shift, scale: [B, d]`.
pub fn adaln(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    flick_shaders::adaln(x, shift, scale)
}

/// `x · (1 + scale) + shift` with per-sample modulation.
/// `x: [B, N, d]`, `shift, scale: [B, d]`.
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// Sinusoidal embedding of scalars (the diffusion time, scaled by 1000 as in DiT).
/// `t: [B] → [B, dim]`
pub fn timestep_embedding(t: Tensor<1>, dim: usize) -> Tensor<2> {
    let half = dim / 2;
    let device = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let freqs =
        Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze_dim::<2>(0); // [1, half]
    let args = (t * 1000.0).unsqueeze_dim::<2>(1) * freqs; // [B, half]
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

/// The conditioning vector of every backbone: `silu(fc2(silu(fc1(emb(t)))) + pool(text))`, the
/// timestep (256-wide sinusoidal embedding) plus the pooled prompt feature.
/// `t: [B]`, `text.pooled: [B, text_dim]` → `[B, fc2's width]`
pub fn condition(
    fc1: &Linear,
    fc2: &Linear,
    pool: &Linear,
    t: Tensor<1>,
    text: &crate::text::TextContext,
) -> Tensor<2> {
    let temb = fc2.forward(crate::shaders::silu(
        fc1.forward(timestep_embedding(t, 256)),
    ));
    crate::shaders::silu(temb + pool.forward(text.pooled.clone()))
}

/// Fixed factorised sin-cos positions for a `t × h × w` token grid: the width is split into a
/// time part (a quarter) and two equal space parts, each a 1-D sin-cos code of its coordinate.
/// Works for any grid size (clips and images alike). Returns `[t·h·w, dim]` as plain data.
pub fn factorised_positions(t: usize, h: usize, w: usize, dim: usize) -> Vec<f32> {
    let dt = (dim / 4) & !1;
    let dh = ((dim - dt) / 2) & !1;
    let dw = dim - dt - dh;
    let code = |pos: usize, width: usize, out: &mut Vec<f32>| {
        let half = width / 2;
        for i in 0..half {
            let f = (-(100f32.ln()) * i as f32 / half.max(1) as f32).exp();
            out.push((pos as f32 * f).sin());
            out.push((pos as f32 * f).cos());
        }
        if width % 2 == 1 {
            out.push(0.0);
        }
    };
    let mut out = Vec::with_capacity(t * h * w * dim);
    for ti in 0..t {
        for yi in 0..h {
            for xi in 0..w {
                code(ti, dt, &mut out);
                code(yi, dh, &mut out);
                code(xi, dw, &mut out);
            }
        }
    }
    out
}

/// The widest input (channels) for which a model convolution runs on Flick's convolution kernel
/// on a GPU; wider ones run on burn's. Routed by `flick bench`'s measurements, kernel against
/// burn, side by side: on an H200 (2026-11-27, `docs/bench/h200-2026-11-27-d810fdc/`) the kernel
/// won the DiT's stem (3 → 16, 3×3×3: ×1.67 forward+backward) and lost its 32 → 16 head (×0.93
/// forward, ×0.83 forward+backward); on lavapipe (2026-12-02) it lost the video U-Net's 128 → 128
/// bottleneck (×0.43 forward, ×0.32 forward+backward). Narrow inputs (the clip's 3 channels) are
/// where the kernel's one-invocation-per-output layout pays.
pub const FUSED_CONV_MAX_IN: usize = 4;

/// A 3-D convolution module's forward: through Flick's convolution where it applies (stride 1,
/// no dilation, one group, odd kernel with padding that keeps the size) and wins (on a GPU at
/// most [`FUSED_CONV_MAX_IN`] input channels; on the CPU any width), burn's `Conv3d::forward`
/// otherwise.
pub fn conv3d(conv: &burn::nn::conv::Conv3d, x: Tensor<5>) -> Tensor<5> {
    let [kt, kh, kw] = conv.kernel_size;
    let same = (conv.padding == burn::nn::PaddingConfig3d::Explicit(kt / 2, kh / 2, kw / 2)
        || conv.padding == burn::nn::PaddingConfig3d::Same)
        && kt % 2 == 1
        && kh % 2 == 1
        && kw % 2 == 1;
    // On the CPU every such convolution goes to Flick's (im2col + matrix products), whatever
    // its width.
    let narrow = conv.weight.dims()[1] <= FUSED_CONV_MAX_IN || !crate::shaders::on_gpu(&x.device());
    if conv.stride == [1, 1, 1] && conv.dilation == [1, 1, 1] && conv.groups == 1 && same && narrow
    {
        return crate::shaders::conv3d(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()));
    }
    conv.forward(x)
}

/// Group norm without learned affine parameters over `[B, C, T, H, W]` (per sample, per group
/// of `C / groups` channels, over the group's channels and all positions).
pub fn group_norm(x: Tensor<5>, groups: usize) -> Tensor<5> {
    crate::shaders::group_norm(x, groups, 1e-6)
}

/// A residual convolution block at pixel resolution, modulated by the conditioning
/// (timestep + pooled prompt), its output convolution zero-initialised so a new block is the
/// identity: `x + conv2(silu(conv1(silu(gn(x)·(1 + scale) + shift))))`, convolutions 1×3×3
/// (within a frame). Gives the network the locality a U-Net has: edges and corners drawn from
/// a pixel's neighbours, not from a patch token's linear read-out.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// conditioning → shift, scale `[B, 2·C]` (zero-initialised)
    pub ada: Linear,
    pub conv1: burn::nn::conv::Conv3d,
    pub conv2: burn::nn::conv::Conv3d,
    #[module(skip)]
    pub groups: usize,
}

impl ConvBlock {
    pub fn new(channels: usize, cond_dim: usize, device: &Device) -> Self {
        use burn::nn::PaddingConfig3d;
        use burn::nn::conv::Conv3dConfig;
        let conv = |zero: bool| {
            let mut c = Conv3dConfig::new([channels, channels], [1, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(0, 1, 1));
            if zero {
                c = c.with_initializer(Initializer::Zeros);
            }
            c.init(device)
        };
        let groups = [8, 4, 2, 1]
            .into_iter()
            .find(|g| channels.is_multiple_of(*g))
            .unwrap_or(1);
        Self {
            ada: LinearConfig::new(cond_dim, 2 * channels)
                .with_initializer(Initializer::Zeros)
                .init(device),
            conv1: conv(false),
            conv2: conv(true),
            groups,
        }
    }

    /// `x: [B, C, T, H, W]`, `c: [B, cond_dim]` (after SiLU) → `[B, C, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, c: Tensor<2>) -> Tensor<5> {
        let [b, ch, _, _, _] = x.dims();
        let m = self.ada.forward(c).chunk(2, 1);
        let (shift, scale) = (
            m[0].clone().reshape([b, ch, 1, 1, 1]),
            m[1].clone().reshape([b, ch, 1, 1, 1]),
        );
        let h = group_norm(x.clone(), self.groups) * (scale + 1.0) + shift;
        let h = conv3d(&self.conv1, crate::shaders::silu(h));
        x + conv3d(&self.conv2, crate::shaders::silu(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    #[test]
    fn positions_are_distinct_and_sized() {
        let p = factorised_positions(3, 4, 5, 40);
        assert_eq!(p.len(), 3 * 4 * 5 * 40);
        let row = |i: usize| &p[i * 40..(i + 1) * 40];
        for i in 0..60 {
            for j in 0..i {
                let d: f32 = row(i).iter().zip(row(j)).map(|(a, b)| (a - b).abs()).sum();
                assert!(d > 1e-3, "tokens {i} and {j} share a position code");
            }
        }
    }

    /// softmax(q·kᵀ/√d + bias)·v written out, to check the fused kernel against.
    fn textbook_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
        let d = q.dims()[3] as f32;
        let scores = q.matmul(k.swap_dims(2, 3)) / d.sqrt() + bias;
        burn::tensor::activation::softmax(scores, 3).matmul(v)
    }

    #[test]
    fn attention_matches_the_textbook_formula_on_long_sequences() {
        // Token counts around and beyond the CPU kernel's block sizes (a clip has 256 tokens):
        // a kernel that did not combine its blocks' softmaxes would split a clip in time.
        for device in [Device::flex(), Device::flex().autodiff()] {
            for n in [7, 64, 129, 256, 300] {
                let r = |s: [usize; 4]| {
                    Tensor::<4>::random(s, burn::tensor::Distribution::Normal(0.0, 2.0), &device)
                };
                let (q, k, v) = (r([2, 3, n, 16]), r([2, 3, n, 16]), r([2, 3, n, 16]));
                let mut b = vec![0f32; 2 * n];
                b[n + n / 2..].fill(-1e4); // second item: last half of the keys masked
                let bias = Tensor::<2>::from_data(TensorData::new(b, [2, n]), &device)
                    .reshape([2, 1, 1, n])
                    .expand([2, 3, n, n]);
                let fused = attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    Some(bias.clone()),
                    AttentionModuleOptions::default(),
                );
                let plain = textbook_attention(q, k, v, bias);
                let diff: f32 = (fused - plain).abs().max().into_scalar();
                assert!(
                    diff < 1e-3,
                    "n = {n}: fused attention differs from the formula by {diff}"
                );
            }
        }
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, -5.0, 0.0, 5.0, 10.0], [2, 4]),
            &device,
        );
        let y: Vec<f32> = layer_norm(x).into_data().try_to_vec::<f32>().unwrap();
        for r in 0..2 {
            let row = &y[r * 4..r * 4 + 4];
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{row:?}");
        }
    }
}
