//! The APT discriminator (Lin et al. 2025, arXiv 2501.08316): the video backbone, initialised
//! from the **teacher**'s weights and trained whole, with new cross-attention-only heads at
//! 1/2, 3/4 and the end of its depth. Each head is one learnable query token attending to every
//! visual token of its layer; the three output tokens are concatenated, normalised and projected
//! to one logit.
//!
//! ```text
//! x_t, t, caption ─ backbone blocks ─┬─ tap depth/2   ─ query₁ ⟶ cross-attention ─┐
//!                                    ├─ tap 3·depth/4 ─ query₂ ⟶ cross-attention ─┼─ concat ─ LayerNorm ─ Linear ─ logit
//!                                    └─ tap depth     ─ query₃ ⟶ cross-attention ─┘
//! ```
//!
//! The noise level `t` at which the discriminator looks is chosen by the caller (APT: one
//! `t ∼ shift(U(0, 1), s)` per sample, `s = 1` for images and 12 for clips).

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::Backbone;
use super::layers::{Attention, AttentionConfig, layer_norm};
use crate::text::TextContext;

/// The 1-based block indices the heads read: `depth/2`, `3·depth/4`, `depth` (distinct, ≥ 1).
pub fn tap_depths(depth: usize) -> Vec<usize> {
    let mut taps: Vec<usize> = [depth / 2, (3 * depth) / 4, depth]
        .into_iter()
        .map(|d| d.max(1))
        .collect();
    taps.dedup();
    taps
}

/// One learnable query token cross-attending to a layer's visual tokens.
#[derive(Module, Debug)]
pub struct QueryHead {
    /// `[1, d]`
    pub query: Param<Tensor<2>>,
    pub attn: Attention,
}

impl QueryHead {
    pub fn new(dim: usize, heads: usize, device: &Device) -> Self {
        let query = Tensor::<2>::random(
            [1, dim],
            burn::tensor::Distribution::Normal(0.0, 0.02),
            device,
        );
        Self {
            query: Param::from_tensor(query),
            attn: AttentionConfig::new(dim, dim, heads).init(device),
        }
    }

    /// `tokens: [B, N, d] → [B, d]`
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = tokens.dims();
        let q = self.query.val().unsqueeze_dim::<3>(0).expand([b, 1, d]);
        self.attn
            .forward(q, layer_norm(tokens), None)
            .reshape([b, d])
    }
}

/// Backbone + query heads → one logit per sample.
#[derive(Module, Debug)]
pub struct Discriminator {
    pub backbone: Backbone,
    pub heads: Vec<QueryHead>,
    pub norm: LayerNorm,
    pub proj: Linear,
    #[module(skip)]
    pub taps: Vec<usize>,
}

impl Discriminator {
    /// A discriminator on `backbone` (the teacher's weights, APT's choice) with fresh heads, one
    /// per tap of [`Backbone::tap_depths`] at that tap's width.
    pub fn new(backbone: Backbone, heads: usize, device: &Device) -> Self {
        let taps = backbone.tap_depths();
        let dims: Vec<usize> = taps.iter().map(|&i| backbone.tap_dim(i)).collect();
        let width: usize = dims.iter().sum();
        crate::params::with_backend_rng(device, None, || Self {
            heads: dims
                .iter()
                .map(|&d| QueryHead::new(d, heads, device))
                .collect(),
            norm: LayerNormConfig::new(width).init(device),
            proj: LinearConfig::new(width, 1).init(device),
            backbone,
            taps,
        })
    }

    /// Text context of the discriminator's own (trained) text encoder.
    pub fn encode_text(&self, prompts: &[String], device: &Device) -> TextContext {
        self.backbone.encode_text(prompts, device)
    }

    /// Logits `[B]` for noisy clips `x_t` `[B, 3, T, H, W]` at times `t` `[B]`.
    pub fn forward(&self, x_t: Tensor<5>, t: Tensor<1>, text: &TextContext) -> Tensor<1> {
        let b = x_t.dims()[0];
        let feats = self.backbone.features(x_t, t, text, &self.taps);
        let pooled: Vec<Tensor<2>> = feats
            .into_iter()
            .zip(&self.heads)
            .map(|(f, h)| h.forward(f))
            .collect();
        self.proj
            .forward(self.norm.forward(Tensor::cat(pooled, 1)))
            .reshape([b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::text::TextEncoderConfig;

    #[test]
    fn taps_follow_apt_and_logits_depend_on_the_input() {
        assert_eq!(tap_depths(36), vec![18, 27, 36]);
        assert_eq!(tap_depths(6), vec![3, 4, 6]);
        assert_eq!(tap_depths(2), vec![1, 2]);
        let device = Device::default();
        let cfg = ModelConfig::new(
            TextEncoderConfig::new()
                .with_dim(32)
                .with_depth(1)
                .with_heads(2)
                .with_max_len(32),
        )
        .with_frames(2)
        .with_height(8)
        .with_width(8)
        .with_patch([2, 4, 4])
        .with_dim(32)
        .with_depth(4)
        .with_heads(2);
        let d = Discriminator::new(cfg.init(&device), 2, &device);
        assert_eq!(d.taps, vec![2, 3, 4]);
        let text = d.encode_text(
            &["a red circle".to_string(), "a blue cross".to_string()],
            &device,
        );
        let x = Tensor::<5>::random(
            [2, 3, 2, 8, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_floats([0.3, 0.9], &device);
        let a: Vec<f32> = d
            .forward(x.clone(), t.clone(), &text)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b: Vec<f32> = d
            .forward(x + 0.5, t, &text)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|v| v.is_finite()));
        assert!(
            a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-6),
            "logits ignore the clip: {a:?} vs {b:?}"
        );
    }

    #[test]
    fn the_discriminator_runs_on_the_unet() {
        // Heads at the bottleneck, the middle of the decoder and the last level, each at its
        // own width; gradients reach the backbone from the logit.
        let device = Device::flex().autodiff();
        let cfg = ModelConfig::new(
            TextEncoderConfig::new()
                .with_dim(16)
                .with_depth(1)
                .with_heads(2)
                .with_max_len(16),
        )
        .with_frames(2)
        .with_height(16)
        .with_width(16)
        .with_kind(crate::model::BackboneKind::Unet)
        .with_unet(
            crate::model::unet::UnetConfig::new()
                .with_channels(vec![8, 16, 16])
                .with_cond_dim(16)
                .with_heads(2),
        );
        cfg.validate().unwrap();
        let d = Discriminator::new(cfg.init(&device), 2, &device);
        assert_eq!(d.taps, vec![1, 3, 4]);
        let text = d.encode_text(
            &["a red circle".to_string(), "a blue cross".to_string()],
            &device,
        );
        let x = Tensor::<5>::random(
            [2, 3, 2, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_floats([0.3, 0.9], &device);
        let logits = d.forward(x.clone(), t.clone(), &text);
        assert_eq!(logits.dims(), [2]);
        let grads = logits.clone().sum().backward();
        let Backbone::Unet(u) = &d.backbone else {
            panic!("a U-Net backbone")
        };
        let g: f32 = u
            .stem
            .weight
            .val()
            .grad(&grads)
            .expect("gradient")
            .abs()
            .sum()
            .into_scalar();
        assert!(g > 0.0, "no gradient reaches the U-Net's stem");
        let b: Vec<f32> = d
            .forward(x + 0.5, t, &text)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let a: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-6),
            "logits ignore the clip: {a:?} vs {b:?}"
        );
    }
}
