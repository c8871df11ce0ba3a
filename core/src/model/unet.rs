//! The video U-Net: Flick's convolutional backbone (the DiT's alternative where locality
//! matters more than global mixing — drawing crisp shapes at 32×32).
//!
//! ```text
//! clip [B,3,T,H,W] ─ stem conv 3×3×3 ─┬─ level 0: ResBlock×n ───────────────────────── skip₀ ─┐
//!                                     └ down ─ level 1: ResBlock×n (+ temporal attention) ─ skip₁ ─┐
//!                                              └ down ─ level L−1: ResBlock×n ─ skip_{L−1} ─┐
//!                                                       bottleneck: ResBlock ─ DiT blocks (full
//!                                                       space-time self-attention + text) ─ tap 1
//!   decoder, lowest level first: concat skip ─ ResBlock×n (+ temporal attention) ─ up ─ … taps 2…L
//!   ─ group norm ─ SiLU ─ conv 1×3×3 (zero-initialised) ─ F ─ preconditioned velocity
//! ```
//!
//! Every [`ResBlock`] is per-frame 2-D (1×3×3 convolutions) with adaptive group norm (scale
//! and shift from the timestep + pooled prompt) and a zero-initialised temporal 3×1×1
//! convolution: time is mixed in every block. Temporal attention (each position attends across
//! frames) at the lowest `temporal_attention_levels`, full space-time self-attention with
//! cross-attention to the text only at the bottleneck — the same [`DitBlock`] the transformer
//! uses, so Flick's fused attention and adaLN kernels serve both backbones.
//!
//! Depth is addressable for the APT discriminator: tap 1 is the bottleneck's output, tap
//! `1 + k` the decoder's output at level `L − 1 − k` (tap `L` = the last, full-resolution level),
//! each as tokens `[B, T·h·w, C]`.

use crate::shaders::silu;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{Initializer, LayerNormConfig, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;

use super::layers::{self, AttentionConfig, Mlp, factorised_positions, group_norm};
use super::{DitBlock, Preconditioning, Prediction, Span};
use crate::text::{TextContext, TextEncoder, TextEncoderConfig};

/// The U-Net's own options (`[model.unet]` in a config); clip size, text encoder, data RMS and
/// parametrisation are the shared model options.
#[derive(Config, Debug, PartialEq)]
pub struct UnetConfig {
    /// Channels per level, full resolution first; each next level halves height and width.
    #[config(default = "vec![32, 64, 128]")]
    pub channels: Vec<usize>,
    /// Residual blocks per level, on the way down and on the way up.
    #[config(default = 1)]
    pub blocks: usize,
    /// The lowest this many levels get a temporal-attention block (with cross-attention to the
    /// text) after their residual blocks, down and up.
    #[config(default = 2)]
    pub temporal_attention_levels: usize,
    /// Transformer blocks (full space-time self-attention + text) at the bottleneck.
    #[config(default = 2)]
    pub mid_blocks: usize,
    #[config(default = 4)]
    pub heads: usize,
    /// Width of the conditioning vector (timestep + pooled prompt).
    #[config(default = 128)]
    pub cond_dim: usize,
}

impl UnetConfig {
    /// Check the geometry for clips of `height × width`.
    pub fn validate(&self, height: usize, width: usize) -> Result<(), String> {
        let levels = self.channels.len();
        if levels == 0 || self.channels.contains(&0) {
            return Err(format!(
                "unet.channels must list ≥ 1 non-zero widths, got {:?}",
                self.channels
            ));
        }
        let scale = 1 << (levels - 1);
        if !height.is_multiple_of(scale) || !width.is_multiple_of(scale) {
            return Err(format!(
                "clip {height}×{width} cannot be halved {} times (unet.channels has {levels} levels)",
                levels - 1
            ));
        }
        if self.blocks == 0 || self.cond_dim == 0 {
            return Err("unet.blocks and unet.cond_dim must be ≥ 1".into());
        }
        if self.temporal_attention_levels > levels {
            return Err(format!(
                "unet.temporal_attention_levels {} > {levels} levels",
                self.temporal_attention_levels
            ));
        }
        for (l, &c) in self.channels.iter().enumerate() {
            let attends = l + self.temporal_attention_levels >= levels
                || (l + 1 == levels && self.mid_blocks > 0);
            if attends && (self.heads == 0 || c % self.heads != 0) {
                return Err(format!(
                    "unet level {l}: {c} channels do not divide into {} attention heads",
                    self.heads
                ));
            }
        }
        Ok(())
    }

    /// Build the U-Net with its text encoder; `sigma_data` and `prediction` as in the DiT.
    pub fn init(
        &self,
        text: &TextEncoderConfig,
        sigma_data: f32,
        prediction: Prediction,
        device: &Device,
    ) -> VideoUnet {
        let levels = self.channels.len();
        let ch = &self.channels;
        let cd = self.cond_dim;
        let temporal = |l: usize| l + self.temporal_attention_levels >= levels;
        let attn_block = |c: usize, span: Span| DitBlock {
            ada: LinearConfig::new(cd, 6 * c)
                .with_initializer(Initializer::Zeros)
                .init(device),
            attn: AttentionConfig::new(c, c, self.heads).init(device),
            cross_norm: LayerNormConfig::new(c).init(device),
            cross: AttentionConfig::new(c, text.dim, self.heads)
                .with_zero_out(true)
                .init(device),
            mlp: Mlp::new(c, 4 * c, device),
            span,
        };
        let mut down = Vec::with_capacity(levels);
        let mut c_in = ch[0];
        for (l, &c) in ch.iter().enumerate() {
            let blocks = (0..self.blocks)
                .map(|i| ResBlock::new(if i == 0 { c_in } else { c }, c, cd, device))
                .collect();
            let sample = (l + 1 < levels).then(|| {
                Conv3dConfig::new([c, c], [1, 3, 3])
                    .with_stride([1, 2, 2])
                    .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
                    .init(device)
            });
            down.push(Level {
                blocks,
                attn: temporal(l).then(|| attn_block(c, Span::Time)),
                sample,
            });
            c_in = c;
        }
        let bottom = ch[levels - 1];
        let mid_res = ResBlock::new(bottom, bottom, cd, device);
        let mid = (0..self.mid_blocks)
            .map(|_| attn_block(bottom, Span::Full))
            .collect();
        // Up: lowest level first; the first block of a level takes the skip concatenated.
        let mut up = Vec::with_capacity(levels);
        let mut c_in = bottom;
        for l in (0..levels).rev() {
            let c = ch[l];
            let blocks = (0..self.blocks)
                .map(|i| ResBlock::new(if i == 0 { c_in + c } else { c }, c, cd, device))
                .collect();
            // Upsampling to the next (finer) level: nearest ×2, then a 1×3×3 convolution to its width.
            let sample = (l > 0).then(|| {
                Conv3dConfig::new([c, ch[l - 1]], [1, 3, 3])
                    .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
                    .init(device)
            });
            up.push(Level {
                blocks,
                attn: temporal(l).then(|| attn_block(c, Span::Time)),
                sample,
            });
            c_in = if l > 0 { ch[l - 1] } else { c };
        }
        VideoUnet {
            text: text.init(device),
            t_fc1: LinearConfig::new(256, cd).init(device),
            t_fc2: LinearConfig::new(cd, cd).init(device),
            text_pool: LinearConfig::new(text.dim, cd).init(device),
            stem: Conv3dConfig::new([3, ch[0]], [3, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .init(device),
            down,
            mid_res,
            mid,
            up,
            head: Conv3dConfig::new([ch[0], 3], [1, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
                .with_initializer(Initializer::Zeros)
                .init(device),
            channels: ch.clone(),
            sigma_data,
            prediction,
        }
    }
}

/// Number of groups for group norm over `c` channels (8 where it divides, else fewer).
fn groups(c: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| c.is_multiple_of(*g))
        .unwrap_or(1)
}

/// `group_norm(x) · (1 + scale) + shift` with per-sample, per-channel modulation from `[B, 2C]`.
fn ada_group_norm(x: Tensor<5>, m: Tensor<2>, groups: usize) -> Tensor<5> {
    let [b, c, _, _, _] = x.dims();
    let m = m.chunk(2, 1); // shift, scale: [B, C]
    group_norm(x, groups) * (m[1].clone().reshape([b, c, 1, 1, 1]) + 1.0)
        + m[0].clone().reshape([b, c, 1, 1, 1])
}

/// A residual block: per-frame 2-D convolutions with adaptive group norm, then a temporal
/// convolution (3×1×1, zero-initialised, residual):
/// `y = skip(x) + conv2(silu(agn₂(conv1(silu(agn₁(x))))))`, `out = y + tconv(silu(gn(y)))`.
/// `conv2` is zero-initialised, so a new block passes `skip(x)` through.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// conditioning → shift, scale of the input (`[B, 2·C_in]`, zero-initialised)
    pub ada1: Linear,
    pub conv1: Conv3d,
    /// conditioning → shift, scale of the hidden channels (zero-initialised)
    pub ada2: Linear,
    pub conv2: Conv3d,
    /// 1×1×1 projection when the width changes
    pub skip: Option<Conv3d>,
    pub temporal: Conv3d,
}

impl ResBlock {
    pub fn new(c_in: usize, c_out: usize, cond_dim: usize, device: &Device) -> Self {
        let spatial = |i: usize, o: usize, zero: bool| {
            let c = Conv3dConfig::new([i, o], [1, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(0, 1, 1));
            if zero {
                c.with_initializer(Initializer::Zeros)
            } else {
                c
            }
            .init(device)
        };
        let ada = |c: usize| {
            LinearConfig::new(cond_dim, 2 * c)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Self {
            ada1: ada(c_in),
            conv1: spatial(c_in, c_out, false),
            ada2: ada(c_out),
            conv2: spatial(c_out, c_out, true),
            skip: (c_in != c_out).then(|| Conv3dConfig::new([c_in, c_out], [1, 1, 1]).init(device)),
            temporal: Conv3dConfig::new([c_out, c_out], [3, 1, 1])
                .with_padding(PaddingConfig3d::Explicit(1, 0, 0))
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, C_in, T, H, W]`, `c`: `[B, cond_dim]` (after SiLU)
    /// - returns `[B, C_out, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, c: Tensor<2>) -> Tensor<5> {
        let c_in = x.dims()[1];
        let h = layers::conv3d(
            &self.conv1,
            silu(ada_group_norm(
                x.clone(),
                self.ada1.forward(c.clone()),
                groups(c_in),
            )),
        ); // [B, C_out, T, H, W]
        let c_out = h.dims()[1];
        let h = layers::conv3d(
            &self.conv2,
            silu(ada_group_norm(h, self.ada2.forward(c), groups(c_out))),
        );
        let y = match &self.skip {
            Some(s) => s.forward(x) + h,
            None => x + h,
        };
        y.clone() + layers::conv3d(&self.temporal, silu(group_norm(y, groups(c_out))))
    }
}

/// One resolution level: residual blocks, an optional attention block, and the resampling
/// convolution to the next level (stride-2 down; nearest ×2 then this conv on the way up).
#[derive(Module, Debug)]
pub struct Level {
    pub blocks: Vec<ResBlock>,
    pub attn: Option<DitBlock>,
    pub sample: Option<Conv3d>,
}

impl Level {
    /// Residual blocks, then the attention block on the level's tokens.
    /// `x: [B, C, T, h, w]` → `[B, C', T, h, w]`.
    fn forward(&self, mut x: Tensor<5>, c: Tensor<2>, text: &TextContext) -> Tensor<5> {
        for blk in &self.blocks {
            x = blk.forward(x, c.clone());
        }
        match &self.attn {
            Some(a) => attend(a, x, c, text, false),
            None => x,
        }
    }
}

/// Run a transformer block on a feature map's tokens (with sin-cos positions when asked).
/// `x: [B, C, T, h, w]` → `[B, C, T, h, w]`.
fn attend(
    block: &DitBlock,
    x: Tensor<5>,
    c: Tensor<2>,
    text: &TextContext,
    positions: bool,
) -> Tensor<5> {
    let [b, ch, t, h, w] = x.dims();
    let n = t * h * w;
    let mut tokens = x.reshape([b, ch, n]).swap_dims(1, 2); // [B, N, C]
    if positions {
        let pos = Tensor::<2>::from_data(
            TensorData::new(factorised_positions(t, h, w, ch), [n, ch]),
            &tokens.device(),
        );
        tokens = tokens + pos.unsqueeze_dim::<3>(0);
    }
    block
        .forward(tokens, c, text, [t, h, w])
        .swap_dims(1, 2)
        .reshape([b, ch, t, h, w])
}

/// Nearest-neighbour ×2 upsampling of height and width: `[B, C, T, H, W]` → `[B, C, T, 2H, 2W]`.
pub fn upsample2(x: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    x.reshape([b * c * t, h, 1, w, 1])
        .expand([b * c * t, h, 2, w, 2])
        .reshape([b, c, t, 2 * h, 2 * w])
}

/// The video U-Net. See the module docs for the data flow.
#[derive(Module, Debug)]
pub struct VideoUnet {
    pub text: TextEncoder,
    pub t_fc1: Linear,
    pub t_fc2: Linear,
    pub text_pool: Linear,
    pub stem: Conv3d,
    /// Full resolution first.
    pub down: Vec<Level>,
    pub mid_res: ResBlock,
    pub mid: Vec<DitBlock>,
    /// Lowest resolution first.
    pub up: Vec<Level>,
    pub head: Conv3d,
    #[module(skip)]
    pub channels: Vec<usize>,
    #[module(skip)]
    pub sigma_data: f32,
    #[module(skip)]
    pub prediction: Prediction,
}

/// What [`VideoUnet::run`] returns: the network output `F` (before the preconditioning), the
/// last decoder level's features, and the tapped features.
pub struct UnetOutput {
    /// `[B, 3, T, H, W]` (None when the run stopped at the last tap)
    pub f: Option<Tensor<5>>,
    /// `[B, C₀, T, H, W]`: the full-resolution features the head reads
    pub top: Option<Tensor<5>>,
    /// `[B, T·h·w, C]` per requested tap
    pub taps: Vec<Tensor<3>>,
}

impl VideoUnet {
    /// Encode prompts once; reuse the context for every denoising step.
    pub fn encode_text(&self, prompts: &[String], device: &Device) -> TextContext {
        self.text.forward(prompts, device)
    }

    /// Number of decoder taps (bottleneck + one per level).
    pub fn depth(&self) -> usize {
        self.channels.len() + 1
    }

    /// Width of the features at tap `i` (1-based, see the module docs).
    pub fn tap_dim(&self, i: usize) -> usize {
        let levels = self.channels.len();
        if i <= 1 {
            self.channels[levels - 1]
        } else {
            self.channels[levels - (i - 1)]
        }
    }

    /// The conditioning vector `[B, cond_dim]` (after SiLU).
    pub fn condition(&self, t: Tensor<1>, text: &TextContext) -> Tensor<2> {
        layers::condition(&self.t_fc1, &self.t_fc2, &self.text_pool, t, text)
    }

    /// Velocity prediction (preconditioned like the DiT, see [`super::preconditioning`]).
    ///
    /// # Shapes
    /// - `x`: `[B, 3, T, H, W]` noisy clip, `t`: `[B]` times in [0, 1] (1 = pure noise)
    /// - returns `[B, 3, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, t: Tensor<1>, text: &TextContext) -> Tensor<5> {
        let pre = Preconditioning::new(t.clone(), self.sigma_data);
        let c = self.condition(t, text);
        let out = self.run(pre.input(x.clone()), c, text, None, &[], true);
        pre.output(
            self.prediction,
            x,
            out.f.expect("run with the head returns F"),
        )
    }

    /// Only the features at `taps` (1-based; the layers after the last tap are not run): the APT
    /// discriminator's backbone.
    pub fn features(
        &self,
        x: Tensor<5>,
        t: Tensor<1>,
        text: &TextContext,
        taps: &[usize],
    ) -> Vec<Tensor<3>> {
        let pre = Preconditioning::new(t.clone(), self.sigma_data);
        let c = self.condition(t, text);
        self.run(pre.input(x), c, text, None, taps, false).taps
    }

    /// The network on preconditioned input `x_in` with conditioning `c`. `extra` (same shape as
    /// the stem's output) is added after the stem — the nested U-Net's outer level enters here.
    /// With `head`, also the output `F` and the full-resolution features; without, the run stops
    /// at the last requested tap.
    ///
    /// # Shapes
    /// - `x_in`: `[B, 3, T, H, W]`, `c`: `[B, cond_dim]`, `extra`: `[B, C₀, T, H, W]`
    pub fn run(
        &self,
        x_in: Tensor<5>,
        c: Tensor<2>,
        text: &TextContext,
        extra: Option<Tensor<5>>,
        taps: &[usize],
        head: bool,
    ) -> UnetOutput {
        let levels = self.channels.len();
        let last_tap = if head {
            usize::MAX
        } else {
            taps.iter().copied().max().unwrap_or(0)
        };
        let mut tapped = Vec::with_capacity(taps.len());
        let tap = |i: usize, x: &Tensor<5>, tapped: &mut Vec<Tensor<3>>| {
            if taps.contains(&i) {
                let [b, ch, t, h, w] = x.dims();
                tapped.push(x.clone().reshape([b, ch, t * h * w]).swap_dims(1, 2));
            }
        };
        let mut x = layers::conv3d(&self.stem, x_in); // [B, C₀, T, H, W]
        if let Some(e) = extra {
            x = x + e;
        }
        let mut skips = Vec::with_capacity(levels);
        for level in &self.down {
            x = level.forward(x, c.clone(), text); // [B, C_l, T, h, w]
            skips.push(x.clone());
            if let Some(s) = &level.sample {
                x = s.forward(x); // [B, C_l, T, h/2, w/2]
            }
        }
        x = self.mid_res.forward(x, c.clone());
        for (i, blk) in self.mid.iter().enumerate() {
            x = attend(blk, x, c.clone(), text, i == 0);
        }
        tap(1, &x, &mut tapped);
        if last_tap <= 1 {
            return UnetOutput {
                f: None,
                top: None,
                taps: tapped,
            };
        }
        for (k, level) in self.up.iter().enumerate() {
            let skip = skips.pop().expect("one skip per level");
            x = level.forward(Tensor::cat(vec![x, skip], 1), c.clone(), text); // [B, C_l, T, h, w]
            tap(k + 2, &x, &mut tapped);
            if k + 2 >= last_tap {
                return UnetOutput {
                    f: None,
                    top: None,
                    taps: tapped,
                };
            }
            if let Some(s) = &level.sample {
                x = layers::conv3d(s, upsample2(x)); // [B, C_{l−1}, T, 2h, 2w]
            }
        }
        let f = layers::conv3d(
            &self.head,
            silu(group_norm(x.clone(), groups(self.channels[0]))),
        ); // [B, 3, T, H, W]
        UnetOutput {
            f: Some(f),
            top: Some(x),
            taps: tapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextEncoderConfig;

    pub fn tiny() -> UnetConfig {
        UnetConfig::new()
            .with_channels(vec![8, 16])
            .with_cond_dim(16)
            .with_heads(2)
            .with_mid_blocks(1)
    }

    fn text() -> TextEncoderConfig {
        TextEncoderConfig::new()
            .with_dim(16)
            .with_depth(1)
            .with_heads(2)
            .with_max_len(16)
    }

    #[test]
    fn shapes_taps_and_upsampling() {
        let device = Device::flex();
        let cfg = tiny();
        cfg.validate(16, 16).unwrap();
        let model = cfg.init(&text(), 0.8, Prediction::Velocity, &device);
        let x = Tensor::<5>::random(
            [2, 3, 4, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.9], [2]), &device);
        let text = model.encode_text(&["a red ball".into(), "".into()], &device);
        assert_eq!(
            model.forward(x.clone(), t.clone(), &text).dims(),
            [2, 3, 4, 16, 16]
        );
        let taps = model.features(x, t, &text, &[1, 2, 3]);
        let dims: Vec<[usize; 3]> = taps.iter().map(|f| f.dims()).collect();
        assert_eq!(
            dims,
            vec![[2, 4 * 8 * 8, 16], [2, 4 * 8 * 8, 16], [2, 4 * 16 * 16, 8]]
        );
        assert_eq!(
            (model.tap_dim(1), model.tap_dim(2), model.tap_dim(3)),
            (16, 16, 8)
        );
        // Nearest upsampling puts each value in a 2×2 block.
        let v = Tensor::<5>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 2, 2]),
            &device,
        );
        let up: Vec<f32> = upsample2(v).into_data().try_to_vec().unwrap();
        assert_eq!(
            up,
            vec![
                1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.
            ]
        );
        // Geometry errors are reported, not panics.
        assert!(tiny().validate(17, 16).is_err());
        assert!(tiny().with_channels(vec![8, 15]).validate(16, 16).is_err());
        assert!(
            tiny()
                .with_temporal_attention_levels(3)
                .validate(16, 16)
                .is_err()
        );
    }

    #[test]
    fn a_fresh_unet_predicts_the_skip_and_every_block_learns() {
        // The head is zero-initialised: v̂ = c_skip·x_t exactly; after giving it weights, every
        // residual block's zero-initialised output convolution gets a gradient.
        let device = Device::flex();
        let cfg = tiny();
        let model = cfg.init(&text(), 0.8, Prediction::Velocity, &device);
        let x = Tensor::<5>::random(
            [2, 3, 4, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.2f32, 0.7], [2]), &device);
        let text_ctx = model.encode_text(&["a".into(), "b".into()], &device);
        let v = model.forward(x.clone(), t.clone(), &text_ctx);
        let pre = Preconditioning::new(t.clone(), 0.8);
        let diff: f32 = (v - pre.output(Prediction::Velocity, x.clone(), x.clone().zeros_like()))
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 1e-5, "{diff}");

        let ad = device.autodiff();
        let mut m = cfg.init(&text(), 0.8, Prediction::Velocity, &ad);
        m.head = Conv3dConfig::new([8, 3], [1, 3, 3])
            .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
            .init(&ad);
        let text_ctx = m.encode_text(&["a red ball".into(), "".into()], &ad);
        let loss = m
            .forward(
                Tensor::from_data(x.into_data(), &ad),
                Tensor::from_data(t.into_data(), &ad),
                &text_ctx,
            )
            .powi_scalar(2)
            .mean();
        let grads = loss.backward();
        let g = |p: &burn::module::Param<Tensor<5>>| -> f32 {
            p.val()
                .grad(&grads)
                .map_or(0.0, |g| g.abs().sum().into_scalar())
        };
        assert!(g(&m.stem.weight) > 0.0, "no gradient at the stem");
        for (name, blk) in [
            ("down 0", &m.down[0].blocks[0]),
            ("mid", &m.mid_res),
            ("up 1", &m.up[1].blocks[0]),
        ] {
            assert!(g(&blk.conv2.weight) > 0.0, "{name}: no gradient at conv2");
            assert!(
                g(&blk.temporal.weight) > 0.0,
                "{name}: no gradient at the temporal conv"
            );
        }
    }
}
