//! One interface for every video backbone: what generation, distillation, the discriminator,
//! evaluation, the viewer and the web page call. A config's `kind` picks the backbone
//! ([`super::ModelConfig::init`]); checkpoints record it in their config metadata, and the
//! variant is not part of a parameter's path (see `crate::params`), so a DiT checkpoint written
//! before there were other backbones loads unchanged.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::VideoDit;
use super::nested::{NestedUnet, pool2};
use super::unet::VideoUnet;
use crate::text::{TextContext, TextEncoder};

/// Which network a [`super::ModelConfig`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// The diffusion transformer over space-time patches ([`VideoDit`]).
    Dit,
    /// The convolutional video U-Net ([`VideoUnet`]).
    Unet,
    /// Matryoshka diffusion's nested U-Net ([`NestedUnet`]): the clip and its pooled copies
    /// denoised jointly.
    Nested,
}

/// A video backbone predicting the rectified-flow velocity.
#[derive(Module, Debug)]
pub enum Backbone {
    Dit(VideoDit),
    Unet(VideoUnet),
    Nested(NestedUnet),
}

impl Backbone {
    pub fn kind(&self) -> BackboneKind {
        match self {
            Backbone::Dit(_) => BackboneKind::Dit,
            Backbone::Unet(_) => BackboneKind::Unet,
            Backbone::Nested(_) => BackboneKind::Nested,
        }
    }

    /// The jointly trained text encoder.
    pub fn text(&self) -> &TextEncoder {
        match self {
            Backbone::Dit(m) => &m.text,
            Backbone::Unet(m) => &m.text,
            Backbone::Nested(m) => &m.inner.text,
        }
    }

    /// Encode prompts once; reuse the context for every denoising step.
    pub fn encode_text(&self, prompts: &[String], device: &Device) -> TextContext {
        self.text().forward(prompts, device)
    }

    /// Velocity prediction at full size.
    ///
    /// The nested U-Net needs every resolution's noisy input ([`Self::forward_levels`]); given
    /// only the full-size clip it reads the smaller ones off it by average pooling, which is
    /// not how it was trained (independent noise per level): samplers use `forward_levels`.
    ///
    /// # Shapes
    /// - `x`: `[B, 3, T, H, W]` noisy clip, `t`: `[B]` times in [0, 1] (1 = pure noise)
    /// - returns `[B, 3, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, t: Tensor<1>, text: &TextContext) -> Tensor<5> {
        match self {
            Backbone::Dit(m) => m.forward(x, t, text),
            Backbone::Unet(m) => m.forward(x, t, text),
            Backbone::Nested(m) => {
                let mut xs = vec![x];
                for _ in 1..m.levels() {
                    let last = xs.last().expect("one level").clone();
                    xs.push(pool2(last));
                }
                m.forward_levels(xs, t, text).swap_remove(0)
            }
        }
    }

    /// Number of resolutions the backbone denoises jointly (1 but for the nested U-Net).
    pub fn levels(&self) -> usize {
        match self {
            Backbone::Nested(m) => m.levels(),
            _ => 1,
        }
    }

    /// The time of resolution `level` when the full-size clip is at `t` (see
    /// [`super::nested::level_time`]).
    pub fn level_time(&self, t: f32, level: usize) -> f32 {
        match self {
            Backbone::Nested(m) => super::nested::level_time(t, level, m.snr_power),
            _ => t,
        }
    }

    /// Velocity predictions for every resolution (full size first; `xs[r]` noisy at
    /// [`Self::level_time`]`(t, r)`). One level for the DiT and the U-Net.
    ///
    /// # Shapes
    /// - `xs[r]`: `[B, 3, T, H/2^r, W/2^r]`, `t`: `[B]` (the full size's time)
    pub fn forward_levels(
        &self,
        mut xs: Vec<Tensor<5>>,
        t: Tensor<1>,
        text: &TextContext,
    ) -> Vec<Tensor<5>> {
        match self {
            Backbone::Nested(m) => m.forward_levels(xs, t, text),
            _ => vec![self.forward(xs.swap_remove(0), t, text)],
        }
    }

    /// The teacher's flow-matching loss on clean clips `x0` `[B, 3, T, H, W]` with noise `eps`
    /// (one tensor per level, [`Self::levels`]) at full-size times `t` `[B]`: the velocity MSE
    /// (the nested U-Net: weighted over its resolutions). Returns `[1]`.
    pub fn flow_loss(
        &self,
        x0: Tensor<5>,
        mut eps: Vec<Tensor<5>>,
        t: Tensor<1>,
        text: &TextContext,
    ) -> Tensor<1> {
        match self {
            Backbone::Nested(m) => m.flow_loss(x0, eps, t, text),
            _ => {
                let (xt, target) = crate::flow::noise(x0, eps.swap_remove(0), t.clone());
                (self.forward(xt, t, text) - target).powi_scalar(2).mean()
            }
        }
    }

    /// The depths the APT discriminator reads (1-based): the DiT's blocks at 1/2, 3/4 and the
    /// end of its depth; the U-Net's bottleneck, the middle of its decoder and its last level.
    pub fn tap_depths(&self) -> Vec<usize> {
        let mut taps = match self {
            Backbone::Dit(m) => super::disc::tap_depths(m.blocks.len()),
            Backbone::Unet(m) | Backbone::Nested(NestedUnet { inner: m, .. }) => {
                let levels = m.channels.len();
                vec![1, 1 + levels.div_ceil(2), levels + 1]
            }
        };
        taps.dedup();
        taps
    }

    /// Width of the tokens at tap `i`.
    pub fn tap_dim(&self, i: usize) -> usize {
        match self {
            Backbone::Dit(m) => m.dim,
            Backbone::Unet(m) | Backbone::Nested(NestedUnet { inner: m, .. }) => m.tap_dim(i),
        }
    }

    /// The token features `[B, N_i, d_i]` at each tap in `taps` (layers after the last tap are
    /// not run). The nested U-Net's taps are its inner network's, run on the clip pooled to the
    /// inner resolution at that level's time.
    pub fn features(
        &self,
        x: Tensor<5>,
        t: Tensor<1>,
        text: &TextContext,
        taps: &[usize],
    ) -> Vec<Tensor<3>> {
        match self {
            Backbone::Dit(m) => m.features(x, t, text, taps),
            Backbone::Unet(m) => m.features(x, t, text, taps),
            Backbone::Nested(m) => {
                let mut x = x;
                for _ in 1..m.levels() {
                    x = pool2(x);
                }
                let inner_t = super::nested::level_times(t.clone(), m.levels() - 1, m.snr_power);
                m.inner.features(x, inner_t, text, taps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::text::TextEncoderConfig;

    #[test]
    fn parameter_paths_do_not_name_the_backbone() {
        // A DiT checkpoint written before the enum existed must load: its paths start at the
        // DiT's own fields.
        let device = Device::flex();
        let cfg = ModelConfig::new(
            TextEncoderConfig::new()
                .with_dim(16)
                .with_depth(1)
                .with_heads(2)
                .with_max_len(16),
        )
        .with_dim(32)
        .with_depth(1)
        .with_heads(2)
        .with_height(16)
        .with_width(16)
        .with_frames(2);
        let mut paths = Vec::new();
        crate::params::visit_params(&cfg.init(&device), |p, _, _, _| paths.push(p.to_string()));
        let mut dit_paths = Vec::new();
        crate::params::visit_params(&cfg.init_dit(&device), |p, _, _, _| {
            dit_paths.push(p.to_string())
        });
        assert_eq!(paths, dit_paths);
        assert!(
            paths.iter().any(|p| p == "blocks.0.attn.q.weight"),
            "{paths:?}"
        );
        let unet = cfg.clone().with_kind(BackboneKind::Unet).with_unet(
            crate::model::unet::UnetConfig::new()
                .with_channels(vec![8, 16])
                .with_cond_dim(16)
                .with_heads(2),
        );
        unet.validate().unwrap();
        let mut paths = Vec::new();
        crate::params::visit_params(&unet.init(&device), |p, _, _, _| paths.push(p.to_string()));
        assert!(
            paths.iter().any(|p| p == "down.0.blocks.0.conv1.weight"),
            "{paths:?}"
        );
    }
}
