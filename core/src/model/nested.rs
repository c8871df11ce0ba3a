//! The nested U-Net of Matryoshka Diffusion Models (Gu et al., ICLR 2024, arXiv 2310.15111;
//! reference code apple/ml-mdm `models/nested_unet.py`): one network denoising a clip at full
//! size and its average-pooled copies jointly.
//!
//! ```text
//! x_t⁽⁰⁾ [B,3,T,H,W] ─ stem ─ ResBlock ─ down ──┬── in_adapter (1×1, zero-init) ──┐
//!                                               │                                 ▼
//! x_t⁽¹⁾ [B,3,T,H/2,W/2] ─────────────── inner U-Net (stem + adapter, levels, attention) ─ head ─ v̂⁽¹⁾
//!                                               │                                 │ top features
//!                                               └─ + out_adapter (1×1, zero-init) ◀┘
//!                           ─ up ×2 ─ concat skip ─ ResBlock ─ head ─ v̂⁽⁰⁾
//! ```
//!
//! The inner U-Net ([`super::unet::VideoUnet`], the `[model.unet]` options) runs at the lowest
//! resolution and holds the attention and most of the compute; each outer level is a light
//! convolutional stage. Its downsampled features enter the next level through a zero-initialised
//! adapter and come back through another, so a model grown by an outer level starts as the
//! smaller one (progressive training: train the inner alone, then `--init-from` it).
//!
//! Every resolution is noised **independently with the same t**, each on its own schedule
//! ([`level_time`]); the loss is `Σ_r ω_r·MSE_r` ([`NestedConfig::loss_weights`]).

use crate::shaders::silu;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{Initializer, PaddingConfig3d};
use burn::prelude::*;

use super::layers::{self, group_norm};
use super::unet::{ResBlock, UnetConfig, VideoUnet, upsample2};
use super::{Preconditioning, Prediction};
use crate::flow::shift;
use crate::text::{TextContext, TextEncoderConfig};

/// The nested model's own options (`[model.nested]`); the inner network is `[model.unet]`.
#[derive(Config, Debug, PartialEq)]
pub struct NestedConfig {
    /// Channels of each outer level, outermost (full resolution) first; each level halves the
    /// size, the inner U-Net runs at `size / 2^len`. Empty = the inner alone at full size (the
    /// first stage of progressive training).
    #[config(default = "vec![16]")]
    pub outer_channels: Vec<usize>,
    /// Loss weight per resolution, full resolution first, inner last (`len = outer + 1`).
    /// ml-mdm: equal weights at 256 px, 16:4:1 (high → low) at 1024.
    #[config(default = "vec![1.0, 1.0]")]
    pub loss_weights: Vec<f32>,
    /// `p` of the per-resolution schedule `SNR_r = SNR_full · s^p` for a copy `s` times smaller
    /// (ml-mdm: 1 by default, 2 at 1024 px).
    #[config(default = 1.0)]
    pub snr_power: f32,
}

impl NestedConfig {
    /// Check the geometry for clips of `height × width`.
    pub fn validate(&self, unet: &UnetConfig, height: usize, width: usize) -> Result<(), String> {
        let outer = self.outer_channels.len();
        if self.outer_channels.contains(&0) {
            return Err("nested.outer_channels must be non-zero".into());
        }
        if self.loss_weights.len() != outer + 1
            || self
                .loss_weights
                .iter()
                .any(|w| !(w.is_finite() && *w >= 0.0))
            || self.loss_weights.iter().all(|&w| w == 0.0)
        {
            return Err(format!(
                "nested.loss_weights needs {} non-negative weights (full resolution first), not all zero; got {:?}",
                outer + 1,
                self.loss_weights
            ));
        }
        if !(self.snr_power.is_finite() && self.snr_power >= 0.0) {
            return Err(format!(
                "nested.snr_power must be ≥ 0, got {}",
                self.snr_power
            ));
        }
        let s = 1 << outer;
        if !height.is_multiple_of(s) || !width.is_multiple_of(s) {
            return Err(format!(
                "clip {height}×{width} cannot be halved {outer} times (nested.outer_channels)"
            ));
        }
        unet.validate(height / s, width / s)
    }

    /// Build the nested model.
    pub fn init(
        &self,
        unet: &UnetConfig,
        text: &TextEncoderConfig,
        sigma_data: f32,
        prediction: Prediction,
        device: &Device,
    ) -> NestedUnet {
        let inner = unet.init(text, sigma_data, prediction, device);
        let n = self.outer_channels.len();
        let outer = (0..n)
            .map(|k| {
                let c = self.outer_channels[k];
                let next = if k + 1 < n {
                    self.outer_channels[k + 1]
                } else {
                    unet.channels[0]
                };
                OuterLevel::new(c, next, unet.cond_dim, device)
            })
            .collect();
        NestedUnet {
            inner,
            outer,
            weights: self.loss_weights.clone(),
            snr_power: self.snr_power,
            sigma_data,
            prediction,
        }
    }
}

/// The time of resolution level `level` (0 = full size, each next level half the size) when the
/// full-size clip is at time `t`, for `SNR_level = SNR_full · s^p` with `s = 2^level`.
///
/// Derivation. On Flick's path `x_t = (1 − t)·x + t·ε` the signal-to-noise ratio is
/// `SNR(t) = ((1 − t)/t)²`. The timestep shift `t' = k·t / (1 + (k − 1)·t)` gives
/// `1 − t' = (1 − t)/(1 + (k − 1)·t)`, so `(1 − t')/t' = (1 − t)/(k·t)`: `SNR(t') = SNR(t)/k²`.
/// MDM's `SNR_r = SNR · s^p` is therefore the shift with `k = s^(−p/2)`. It keeps `t = 0` and
/// `t = 1` (all resolutions start from pure noise and end clean) and is monotone, so one Euler
/// grid on `t` drives every level.
pub fn level_time(t: f32, level: usize, snr_power: f32) -> f32 {
    if level == 0 {
        return t;
    }
    let s = (1u32 << level) as f32;
    shift(t, s.powf(-snr_power / 2.0))
}

/// [`level_time`] on a tensor of times `[B]`.
pub fn level_times(t: Tensor<1>, level: usize, snr_power: f32) -> Tensor<1> {
    if level == 0 {
        return t;
    }
    let k = (1u32 << level) as f32;
    let k = k.powf(-snr_power / 2.0);
    (t.clone() * k) / ((t * (k - 1.0)) + 1.0)
}

/// Average pooling of height and width by 2: `[B, C, T, H, W]` → `[B, C, T, H/2, W/2]`.
pub fn pool2(x: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    x.reshape([b * c * t, h / 2, 2, w / 2, 2])
        .mean_dim(4)
        .mean_dim(2)
        .reshape([b, c, t, h / 2, w / 2])
}

/// One outer (higher-resolution) level: a light conv stage around the next level.
#[derive(Module, Debug)]
pub struct OuterLevel {
    pub stem: Conv3d,
    pub down_block: ResBlock,
    /// stride-2 1×3×3
    pub down: Conv3d,
    /// `C → C_next` 1×1×1, zero-initialised: added to the next level's stem output
    pub in_adapter: Conv3d,
    /// `C_next → C` 1×1×1, zero-initialised: the next level's top features added back
    pub out_adapter: Conv3d,
    /// after nearest ×2: 1×3×3
    pub up: Conv3d,
    pub up_block: ResBlock,
    /// zero-initialised
    pub head: Conv3d,
}

impl OuterLevel {
    fn new(c: usize, next: usize, cond_dim: usize, device: &Device) -> Self {
        let conv = |i: usize, o: usize, k: [usize; 3], zero: bool| {
            let pad = PaddingConfig3d::Explicit(k[0] / 2, k[1] / 2, k[2] / 2);
            let cfg = Conv3dConfig::new([i, o], k).with_padding(pad);
            if zero {
                cfg.with_initializer(Initializer::Zeros)
            } else {
                cfg
            }
            .init(device)
        };
        Self {
            stem: conv(3, c, [3, 3, 3], false),
            down_block: ResBlock::new(c, c, cond_dim, device),
            down: Conv3dConfig::new([c, c], [1, 3, 3])
                .with_stride([1, 2, 2])
                .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
                .init(device),
            in_adapter: conv(c, next, [1, 1, 1], true),
            out_adapter: conv(next, c, [1, 1, 1], true),
            up: conv(c, c, [1, 3, 3], false),
            up_block: ResBlock::new(2 * c, c, cond_dim, device),
            head: conv(c, 3, [1, 3, 3], true),
        }
    }
}

/// The nested U-Net. See the module docs.
#[derive(Module, Debug)]
pub struct NestedUnet {
    pub inner: VideoUnet,
    /// Outermost (full resolution) first.
    pub outer: Vec<OuterLevel>,
    #[module(skip)]
    pub weights: Vec<f32>,
    #[module(skip)]
    pub snr_power: f32,
    #[module(skip)]
    pub sigma_data: f32,
    #[module(skip)]
    pub prediction: Prediction,
}

fn groups(c: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| c.is_multiple_of(*g))
        .unwrap_or(1)
}

impl NestedUnet {
    /// Number of resolutions (outer levels + the inner).
    pub fn levels(&self) -> usize {
        self.outer.len() + 1
    }

    /// Velocity predictions at every resolution.
    ///
    /// # Shapes
    /// - `xs[r]`: `[B, 3, T, H/2^r, W/2^r]`, each noisy at `level_time(t, r)`; `t`: `[B]` the
    ///   full-size time
    /// - returns one `[B, 3, T, H/2^r, W/2^r]` per level (each the velocity in its own time)
    pub fn forward_levels(
        &self,
        xs: Vec<Tensor<5>>,
        t: Tensor<1>,
        text: &TextContext,
    ) -> Vec<Tensor<5>> {
        let n = self.outer.len();
        assert_eq!(xs.len(), n + 1, "one input per resolution");
        // The conditioning is the inner network's own (its time): an inner U-Net trained alone
        // sees exactly what it saw then, which makes growth by an outer level an identity.
        let c = self
            .inner
            .condition(level_times(t.clone(), n, self.snr_power), text);
        let pre: Vec<Preconditioning> = (0..=n)
            .map(|r| {
                Preconditioning::new(level_times(t.clone(), r, self.snr_power), self.sigma_data)
            })
            .collect();
        // Down through the outer levels: each level's stem output plus the adapter of the level above.
        let mut carry: Option<Tensor<5>> = None; // adapter features for the next level's stem
        let mut skips = Vec::with_capacity(n);
        let mut downs = Vec::with_capacity(n);
        for (r, level) in self.outer.iter().enumerate() {
            let mut h = layers::conv3d(&level.stem, pre[r].input(xs[r].clone())); // [B, C_r, T, H_r, W_r]
            if let Some(e) = carry.take() {
                h = h + e;
            }
            let h = level.down_block.forward(h, c.clone());
            skips.push(h.clone());
            let d = level.down.forward(h); // [B, C_r, T, H_r/2, W_r/2]
            carry = Some(level.in_adapter.forward(d.clone()));
            downs.push(d);
        }
        let inner = self.inner.run(
            pre[n].input(xs[n].clone()),
            c.clone(),
            text,
            carry,
            &[],
            true,
        );
        let mut outs = vec![pre[n].output(
            self.prediction,
            xs[n].clone(),
            inner.f.expect("the inner head ran"),
        )];
        let mut top = inner.top.expect("the inner head ran");
        // Back up: outermost last.
        for (r, level) in self.outer.iter().enumerate().rev() {
            let d = downs.pop().expect("one per level") + level.out_adapter.forward(top); // [B, C_r, T, H_r/2, W_r/2]
            let u = layers::conv3d(&level.up, upsample2(d)); // [B, C_r, T, H_r, W_r]
            let h = level.up_block.forward(
                Tensor::cat(vec![u, skips.pop().expect("one per level")], 1),
                c.clone(),
            );
            let cr = h.dims()[1];
            let f = layers::conv3d(&level.head, silu(group_norm(h.clone(), groups(cr))));
            outs.push(pre[r].output(self.prediction, xs[r].clone(), f));
            top = h;
        }
        outs.reverse();
        outs
    }

    /// The multi-resolution flow-matching loss `Σ_r ω_r·MSE(v̂_r, ε_r − D_r(x0))`, `D_r` = average
    /// pooling `r` times, every level noised with its own `ε_r` at `level_time(t, r)`.
    ///
    /// # Shapes
    /// - `x0`: `[B, 3, T, H, W]`, `eps[r]`: `[B, 3, T, H/2^r, W/2^r]`, `t`: `[B]` → scalar `[1]`
    pub fn flow_loss(
        &self,
        x0: Tensor<5>,
        eps: Vec<Tensor<5>>,
        t: Tensor<1>,
        text: &TextContext,
    ) -> Tensor<1> {
        let mut clean = x0;
        let mut xs = Vec::with_capacity(eps.len());
        let mut targets = Vec::with_capacity(eps.len());
        for (r, e) in eps.into_iter().enumerate() {
            if r > 0 {
                clean = pool2(clean);
            }
            let (xt, v) =
                crate::flow::noise(clean.clone(), e, level_times(t.clone(), r, self.snr_power));
            xs.push(xt);
            targets.push(v);
        }
        let preds = self.forward_levels(xs, t, text);
        let total: f32 = self.weights.iter().sum();
        let mut loss: Option<Tensor<1>> = None;
        for ((p, v), &w) in preds.into_iter().zip(targets).zip(&self.weights) {
            if w == 0.0 {
                continue;
            }
            let l = (p - v).powi_scalar(2).mean() * (w / total);
            loss = Some(match loss {
                Some(acc) => acc + l,
                None => l,
            });
        }
        loss.expect("at least one non-zero loss weight (validated)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> TextEncoderConfig {
        TextEncoderConfig::new()
            .with_dim(16)
            .with_depth(1)
            .with_heads(2)
            .with_max_len(16)
    }

    fn inner() -> UnetConfig {
        UnetConfig::new()
            .with_channels(vec![8, 16])
            .with_cond_dim(16)
            .with_heads(2)
            .with_mid_blocks(1)
    }

    #[test]
    fn level_times_follow_the_snr_rule() {
        // SNR(t) = ((1 − t)/t)²: level r's SNR is s^p times the full size's, s = 2^r.
        let snr = |t: f32| ((1.0 - t) / t).powi(2);
        for p in [1.0f32, 2.0] {
            for t in [0.1f32, 0.5, 0.9] {
                for r in [1usize, 2] {
                    let s = (1 << r) as f32;
                    let ratio = snr(level_time(t, r, p)) / snr(t);
                    assert!(
                        (ratio / s.powf(p) - 1.0).abs() < 1e-3,
                        "p {p}, t {t}, level {r}: SNR ratio {ratio}"
                    );
                }
            }
            assert_eq!(level_time(0.0, 1, p), 0.0);
            assert!((level_time(1.0, 1, p) - 1.0).abs() < 1e-6);
            assert_eq!(level_time(0.37, 0, p), 0.37);
        }
        // The tensor form agrees.
        let device = Device::flex();
        let ts = Tensor::<1>::from_floats([0.1, 0.5, 0.9], &device);
        let got: Vec<f32> = level_times(ts, 1, 1.0).into_data().try_to_vec().unwrap();
        for (g, t) in got.iter().zip([0.1f32, 0.5, 0.9]) {
            assert!((g - level_time(t, 1, 1.0)).abs() < 1e-6);
        }
    }

    #[test]
    fn shapes_and_a_grown_model_starts_as_the_inner_one() {
        let device = Device::flex();
        let cfg = NestedConfig::new();
        cfg.validate(&inner(), 32, 32).unwrap();
        assert!(cfg.validate(&inner(), 30, 32).is_err());
        assert!(
            cfg.clone()
                .with_loss_weights(vec![1.0])
                .validate(&inner(), 32, 32)
                .is_err()
        );
        let model = cfg.init(&inner(), &text(), 0.8, Prediction::Velocity, &device);
        let r = |s: [usize; 5]| {
            Tensor::<5>::random(s, burn::tensor::Distribution::Normal(0.0, 1.0), &device)
        };
        let (x0, x1) = (r([2, 3, 2, 32, 32]), r([2, 3, 2, 16, 16]));
        let t = Tensor::<1>::from_floats([0.3, 0.8], &device);
        let text_ctx = model
            .inner
            .encode_text(&["a red ball".into(), "".into()], &device);
        let outs = model.forward_levels(vec![x0.clone(), x1.clone()], t.clone(), &text_ctx);
        assert_eq!(
            outs.iter().map(|o| o.dims()).collect::<Vec<_>>(),
            vec![[2, 3, 2, 32, 32], [2, 3, 2, 16, 16]]
        );

        // Growth: a trained inner (random weights everywhere) inside a fresh outer level gives
        // exactly the inner's own prediction at its resolution (zero-initialised adapters).
        let trained = crate::params::map_params(model.inner.clone(), |_, _, p, _| {
            Some(p.random_like(burn::tensor::Distribution::Normal(0.0, 0.1)))
        });
        let mut grown = model.clone();
        grown.inner = trained.clone();
        let outs = grown.forward_levels(vec![x0.clone(), x1.clone()], t.clone(), &text_ctx);
        let alone = trained.forward(x1.clone(), level_times(t.clone(), 1, 1.0), &text_ctx);
        let diff: f32 = (outs[1].clone() - alone).abs().max().into_scalar();
        assert!(
            diff < 1e-5,
            "the grown model's inner output differs from the inner alone by {diff}"
        );
        // Once the adapters have weights, the full size reaches the inner and back.
        let mut linked = grown.clone();
        linked.outer[0].in_adapter = Conv3dConfig::new([16, 8], [1, 1, 1]).init(&device);
        linked.outer[0].out_adapter = Conv3dConfig::new([8, 16], [1, 1, 1]).init(&device);
        linked.outer[0].head = Conv3dConfig::new([16, 3], [1, 3, 3])
            .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
            .init(&device);
        let a = linked.forward_levels(vec![x0.clone(), x1.clone()], t.clone(), &text_ctx);
        let b = linked.forward_levels(vec![x0 + 1.0, x1], t, &text_ctx);
        let d: f32 = (a[1].clone() - b[1].clone()).abs().max().into_scalar();
        assert!(
            d > 1e-4,
            "the inner ignores the full-size input through the adapter"
        );
    }

    #[test]
    fn pooling_averages_blocks() {
        let device = Device::flex();
        let x = Tensor::<5>::from_data(
            TensorData::new(
                (0..16).map(|v| v as f32).collect::<Vec<_>>(),
                [1, 1, 1, 4, 4],
            ),
            &device,
        );
        let p: Vec<f32> = pool2(x).into_data().try_to_vec().unwrap();
        assert_eq!(p, vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn the_loss_weighs_every_resolution_and_trains() {
        let ad = Device::flex().autodiff();
        let model = NestedConfig::new().init(&inner(), &text(), 0.8, Prediction::Velocity, &ad);
        let r = |s: [usize; 5]| {
            Tensor::<5>::random(s, burn::tensor::Distribution::Normal(0.0, 1.0), &ad)
        };
        let text_ctx = model.inner.encode_text(&["a".into(), "b".into()], &ad);
        let t = Tensor::<1>::from_floats([0.4, 0.9], &ad);
        let loss = model.flow_loss(
            r([2, 3, 2, 32, 32]),
            vec![r([2, 3, 2, 32, 32]), r([2, 3, 2, 16, 16])],
            t,
            &text_ctx,
        );
        let v: f32 = loss.clone().into_scalar();
        assert!(v.is_finite() && v > 0.0);
        let grads = loss.backward();
        // The zero-initialised heads get gradients: both resolutions are trained.
        for (name, w) in [
            ("outer head", &model.outer[0].head.weight),
            ("inner head", &model.inner.head.weight),
        ] {
            let g: f32 = w
                .val()
                .grad(&grads)
                .expect("gradient")
                .abs()
                .sum()
                .into_scalar();
            assert!(g > 0.0, "no gradient at the {name}");
        }
    }
}
