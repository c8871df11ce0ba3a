//! The video backbone: a diffusion transformer over space-time clips (APT's family, at Flick's
//! scale), predicting the rectified-flow velocity.
//!
//! ```text
//! clip [B,3,T,H,W] ─ conv stem (3×3×3) ─ 3-D patchify ─ tokens [B,N,d] + sin-cos positions
//!   ─ depth × DitBlock(adaLN-Zero(t + pooled text) · self-attention · cross-attention to text · MLP)
//!   ─ adaLN final norm ─ un-patchify ─ conv head (1×3×3, with the stem's features as a skip) ─ v [B,3,T,H,W]
//! ```
//!
//! Text conditioning is cross-attention to the jointly trained [`TextEncoder`] (keys masked at
//! padding) plus the pooled prompt feature added to the timestep embedding, so global attributes
//! (colour, background) reach every block through the adaLN modulation. Cross-attention rather
//! than MMDiT joint attention: text and video widths can differ, and the text tokens are computed
//! once per prompt, not once per denoising step.
//!
//! Depth is addressable: [`VideoDit::forward_taps`] returns the token features after any blocks
//! (the APT discriminator taps 1/2, 3/4 and the end of depth).

pub mod backbone;
pub mod disc;
pub mod layers;
pub mod nested;
pub mod unet;

pub use backbone::{Backbone, BackboneKind};

use crate::shaders::silu;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::text::{TextContext, TextEncoder, TextEncoderConfig};
use layers::{Attention, AttentionConfig, ConvBlock, Mlp, adaln, factorised_positions};

/// How a block's self-attention spans the token grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMode {
    /// Every token attends to every space-time token.
    Full,
    /// Even blocks attend within a frame, odd blocks across frames at one position.
    Factorised,
}

/// What the network's output stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The velocity, preconditioned (see [`preconditioning`]): `v̂ = c_skip·x_t + c_out·F`. To
    /// leave no noise in `x̂0` the network must reproduce the noise of `x_t` pixel by pixel.
    Velocity,
    /// The clean clip (Li & He 2025, "Back to Basics: Let Denoising Generative Models
    /// Denoise"): `x̂0 = F`, `v̂ = (x_t − x̂0) / max(t, 0.05)`. The network outputs a point of the
    /// data manifold (flat shapes here), never the noise; the loss stays the velocity loss.
    Clean,
}

/// The smallest `t` the clean-clip parametrisation divides by (JiT's clip of the denominator).
pub const CLEAN_T_MIN: f32 = 0.05;

/// The widest layer a config may ask for (channels, model and text dimensions).
const MAX_WIDTH: usize = 16_384;
/// The most blocks a config may stack in any one place.
const MAX_DEPTH: usize = 1_024;

/// Configuration of a video model: which backbone ([`BackboneKind`]), the clip size, the text
/// encoder, the parametrisation — shared by every backbone — and each backbone's own options
/// (the DiT's at the top level, where they were before there were other backbones; the U-Net's
/// under `unet`).
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// The backbone: `dit` (the default; what checkpoints without the field hold), `unet` or
    /// `nested`.
    #[config(default = "BackboneKind::Dit")]
    pub kind: BackboneKind,
    /// Clip size the model is trained on (positions are computed for any grid, but the
    /// checkpoint records what it saw).
    #[config(default = 8)]
    pub frames: usize,
    #[config(default = 32)]
    pub height: usize,
    #[config(default = 32)]
    pub width: usize,
    /// Patch size `[t, h, w]` of the 3-D patchify.
    #[config(default = "[1, 4, 4]")]
    pub patch: [usize; 3],
    #[config(default = 128)]
    pub dim: usize,
    #[config(default = 6)]
    pub depth: usize,
    #[config(default = 4)]
    pub heads: usize,
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Channels of the light convolutional stem and head; 0 = plain linear patchify.
    #[config(default = 16)]
    pub stem_channels: usize,
    #[config(default = "AttentionMode::Full")]
    pub attention: AttentionMode,
    /// Time-and-prompt modulation (scale, shift; zero-initialised) of the conv head's hidden
    /// channels. At low t the velocity is mostly the noise, which the head reads off the stem's
    /// full-resolution features with a gain of order 1/t; without modulation the head has one
    /// gain for every t and leaves grain in the samples. Needs `stem_channels > 0`.
    #[config(default = false)]
    pub head_modulation: bool,
    /// Residual, modulated 1×3×3 convolution blocks at pixel resolution ([`ConvBlock`]), this
    /// many after the stem and as many in the head (zero-initialised: a model grown with them
    /// starts as the same function). Needs `stem_channels > 0`.
    #[config(default = 0)]
    pub conv_blocks: usize,
    /// What the network predicts (the forward pass returns the velocity either way).
    #[config(default = "Prediction::Velocity")]
    pub prediction: Prediction,
    /// Root-mean-square of the data (clips in [-1, 1]) for the input/skip/output
    /// preconditioning; see [`VideoDit::forward_taps`].
    #[config(default = 0.8)]
    pub sigma_data: f32,
    pub text: TextEncoderConfig,
    /// The U-Net's options (`kind = "unet"`; the inner network of `kind = "nested"`).
    #[config(default = "unet::UnetConfig::new()")]
    pub unet: unet::UnetConfig,
    /// The nested U-Net's outer levels and loss (`kind = "nested"`).
    #[config(default = "nested::NestedConfig::new()")]
    pub nested: nested::NestedConfig,
}

impl ModelConfig {
    /// Read a config from JSON-like data (checkpoint metadata, a TOML table), filling the
    /// fields it lacks with their defaults — checkpoints and config files written before a field
    /// existed keep loading and mean what they meant — and rejecting fields that do not exist.
    pub fn from_value(value: serde_json::Value) -> Result<Self, String> {
        let mut full = serde_json::to_value(ModelConfig::new(TextEncoderConfig::new()))
            .map_err(|e| e.to_string())?;
        merge_config(&mut full, value, "")?;
        serde_json::from_value(full).map_err(|e| e.to_string())
    }

    /// Check the geometry before building anything.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        self.within_limits().map_err(crate::Error::Config)?;
        if self.frames == 0 || self.height == 0 || self.width == 0 {
            return bad(format!(
                "clip size {}×{}×{} must be ≥ 1 everywhere",
                self.frames, self.height, self.width
            ));
        }
        if !self.text.dim.is_multiple_of(self.text.heads) || self.text.max_len < 2 {
            return bad(format!(
                "text encoder: dim {} must divide by heads {}, max_len ≥ 2",
                self.text.dim, self.text.heads
            ));
        }
        if self.text.conv_kernel.is_multiple_of(2) && self.text.conv_kernel != 0 {
            return bad(format!(
                "text encoder: conv_kernel must be odd (or 0 for none), got {}",
                self.text.conv_kernel
            ));
        }
        match self.kind {
            BackboneKind::Dit => self.validate_dit(),
            BackboneKind::Unet => self
                .unet
                .validate(self.height, self.width)
                .map_err(crate::Error::Config),
            BackboneKind::Nested => self
                .nested
                .validate(&self.unet, self.height, self.width)
                .map_err(crate::Error::Config),
        }
    }

    /// Every size within generous bounds, checked before anything is built or allocated: a
    /// config read from a file (a checkpoint's metadata, a TOML) with absurd numbers is an error
    /// naming the field, not an allocation of terabytes or an overflow.
    fn within_limits(&self) -> Result<(), String> {
        let u = &self.unet;
        let t = &self.text;
        let checks: [(&str, usize, usize); 20] = [
            ("frames", self.frames, 1024),
            ("height", self.height, 4096),
            ("width", self.width, 4096),
            ("patch[0]", self.patch[0], 64),
            ("patch[1]", self.patch[1], 64),
            ("patch[2]", self.patch[2], 64),
            ("dim", self.dim, MAX_WIDTH),
            ("depth", self.depth, MAX_DEPTH),
            ("heads", self.heads, 1024),
            ("mlp_ratio", self.mlp_ratio, 64),
            ("stem_channels", self.stem_channels, MAX_WIDTH),
            ("conv_blocks", self.conv_blocks, MAX_DEPTH),
            ("text.max_len", t.max_len, 65_536),
            ("text.dim", t.dim, MAX_WIDTH),
            ("text.depth", t.depth, MAX_DEPTH),
            ("text.heads", t.heads, 1024),
            ("text.conv_kernel", t.conv_kernel, 255),
            ("unet.blocks", u.blocks, MAX_DEPTH),
            ("unet.mid_blocks", u.mid_blocks, MAX_DEPTH),
            ("unet.cond_dim", u.cond_dim, MAX_WIDTH),
        ];
        for (name, value, max) in checks {
            if value > max {
                return Err(format!("{name} = {value} is out of range (at most {max})"));
            }
        }
        if self
            .frames
            .saturating_mul(self.height)
            .saturating_mul(self.width)
            > 1 << 24
        {
            return Err(format!(
                "clip {}×{}×{} has more than 2^24 pixels",
                self.frames, self.height, self.width
            ));
        }
        if t.heads == 0 || u.heads > 1024 || u.temporal_attention_levels > 16 {
            return Err(format!(
                "text.heads must be ≥ 1 and unet.heads ≤ 1024, unet.temporal_attention_levels ≤ 16 (got {}, {}, {})",
                t.heads, u.heads, u.temporal_attention_levels
            ));
        }
        if u.channels.len() > 12 || u.channels.iter().any(|&c| c > MAX_WIDTH) {
            return Err(format!(
                "unet.channels: at most 12 levels of at most {MAX_WIDTH} channels, got {:?}",
                u.channels
            ));
        }
        let outer = &self.nested.outer_channels;
        if outer.len() > 6 || outer.iter().any(|&c| c > MAX_WIDTH) {
            return Err(format!(
                "nested.outer_channels: at most 6 levels of at most {MAX_WIDTH} channels, got {outer:?}"
            ));
        }
        if self.kind == BackboneKind::Dit && (self.heads == 0 || self.dim == 0) {
            return Err(format!(
                "dim and heads must be ≥ 1 (got dim {}, heads {})",
                self.dim, self.heads
            ));
        }
        if t.dim == 0 {
            return Err("text.dim must be ≥ 1".into());
        }
        Ok(())
    }

    fn validate_dit(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        let [pt, ph, pw] = self.patch;
        if pt == 0 || ph == 0 || pw == 0 {
            return bad(format!("patch sizes must be ≥ 1, got {:?}", self.patch));
        }
        if !self.frames.is_multiple_of(pt)
            || !self.height.is_multiple_of(ph)
            || !self.width.is_multiple_of(pw)
        {
            return bad(format!(
                "clip {}×{}×{} is not divisible by patch {:?}",
                self.frames, self.height, self.width, self.patch
            ));
        }
        if !self.dim.is_multiple_of(self.heads) || !self.dim.is_multiple_of(16) {
            return bad(format!(
                "dim {} must be a multiple of 16 and of heads {}",
                self.dim, self.heads
            ));
        }
        if self.depth == 0 {
            return bad("depth must be ≥ 1".into());
        }
        if self.head_modulation && self.stem_channels == 0 {
            return bad("head_modulation needs a conv head (stem_channels > 0)".into());
        }
        if self.conv_blocks > 0 && self.stem_channels == 0 {
            return bad("conv_blocks needs a conv stem and head (stem_channels > 0)".into());
        }
        Ok(())
    }

    /// `[height, width]` of every resolution the backbone denoises, full size first (the nested
    /// U-Net: one per outer level and its inner; every other backbone: the clip's).
    pub fn level_sizes(&self) -> Vec<[usize; 2]> {
        let levels = if self.kind == BackboneKind::Nested {
            self.nested.outer_channels.len() + 1
        } else {
            1
        };
        (0..levels)
            .map(|r| [self.height >> r, self.width >> r])
            .collect()
    }

    /// Noise values per clip over all resolutions (`3·T·Σ h_r·w_r`) for clips of `frames`.
    pub fn noise_len(&self, frames: usize) -> usize {
        self.level_sizes()
            .iter()
            .map(|[h, w]| 3 * frames * h * w)
            .sum()
    }

    /// Build the configured backbone.
    pub fn init(&self, device: &Device) -> Backbone {
        crate::params::with_backend_rng(device, None, || self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Backbone {
        match self.kind {
            BackboneKind::Dit => Backbone::Dit(self.init_dit(device)),
            BackboneKind::Unet => {
                Backbone::Unet(
                    self.unet
                        .init(&self.text, self.sigma_data, self.prediction, device),
                )
            }
            BackboneKind::Nested => Backbone::Nested(self.nested.init(
                &self.unet,
                &self.text,
                self.sigma_data,
                self.prediction,
                device,
            )),
        }
    }

    /// Build the DiT (whatever `kind` says).
    pub fn init_dit(&self, device: &Device) -> VideoDit {
        let d = self.dim;
        let [pt, ph, pw] = self.patch;
        let cs = self.stem_channels;
        // The stem mixes 3×3×3 neighbourhoods (local motion); the head refines each frame (1×3×3),
        // a third of the cost at full resolution.
        let conv = |i: usize, o: usize, zero: bool| {
            let (k, pad) = if i == 3 {
                ([3, 3, 3], PaddingConfig3d::Explicit(1, 1, 1))
            } else {
                ([1, 3, 3], PaddingConfig3d::Explicit(0, 1, 1))
            };
            let mut c = Conv3dConfig::new([i, o], k).with_padding(pad);
            if zero {
                c = c.with_initializer(Initializer::Zeros);
            }
            c.init(device)
        };
        let n_conv = if cs > 0 { self.conv_blocks } else { 0 };
        let in_ch = if cs > 0 { cs } else { 3 };
        let out_ch = if cs > 0 { cs } else { 3 };
        let mut proj = LinearConfig::new(d, pt * ph * pw * out_ch);
        if cs == 0 {
            proj = proj.with_initializer(Initializer::Zeros);
        }
        let blocks = (0..self.depth)
            .map(|i| DitBlock {
                ada: LinearConfig::new(d, 6 * d)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
                attn: AttentionConfig::new(d, d, self.heads).init(device),
                cross_norm: LayerNormConfig::new(d).init(device),
                cross: AttentionConfig::new(d, self.text.dim, self.heads)
                    .with_zero_out(true)
                    .init(device),
                mlp: Mlp::new(d, d * self.mlp_ratio, device),
                span: match self.attention {
                    AttentionMode::Full => Span::Full,
                    AttentionMode::Factorised if i % 2 == 0 => Span::Space,
                    AttentionMode::Factorised => Span::Time,
                },
            })
            .collect();
        VideoDit {
            text: self.text.init(device),
            stem: (cs > 0).then(|| conv(3, cs, false)),
            patch_embed: Conv3dConfig::new([in_ch, d], self.patch)
                .with_stride(self.patch)
                .init(device),
            t_fc1: LinearConfig::new(256, d).init(device),
            t_fc2: LinearConfig::new(d, d).init(device),
            text_pool: LinearConfig::new(self.text.dim, d).init(device),
            blocks,
            final_ada: LinearConfig::new(d, 2 * d)
                .with_initializer(Initializer::Zeros)
                .init(device),
            final_proj: proj.init(device),
            head1: (cs > 0).then(|| conv(2 * cs, cs, false)),
            head2: (cs > 0).then(|| conv(cs, 3, true)),
            head_ada: (cs > 0 && self.head_modulation).then(|| {
                LinearConfig::new(d, 2 * cs)
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            }),
            stem_blocks: (0..n_conv).map(|_| ConvBlock::new(cs, d, device)).collect(),
            head_blocks: (0..n_conv).map(|_| ConvBlock::new(cs, d, device)).collect(),
            patch: self.patch,
            dim: d,
            sigma_data: self.sigma_data,
            prediction: self.prediction,
        }
    }
}

/// Overwrite `base` with `over` key by key (recursively for tables); a key `base` lacks is an
/// error naming it.
fn merge_config(
    base: &mut serde_json::Value,
    over: serde_json::Value,
    path: &str,
) -> Result<(), String> {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get_mut(&k) {
                    Some(slot) => merge_config(slot, v, &p)?,
                    None => return Err(format!("unknown model config field `{p}`")),
                }
            }
            Ok(())
        }
        (slot, v) => {
            // The value must have the type of the default it replaces: a wrong type, a negative
            // or fractional size is an error naming the field, not a serde message without one.
            let fits = match (&*slot, &v) {
                (Value::Number(d), Value::Number(n)) if d.is_u64() => n.is_u64(),
                (Value::Number(d), Value::Number(n)) if d.is_i64() => n.is_i64(),
                (Value::Number(_), Value::Number(_)) => true,
                (Value::Array(d), Value::Array(n)) => match d.first() {
                    Some(Value::Number(e)) if e.is_u64() => n.iter().all(Value::is_u64),
                    Some(Value::Number(_)) => n.iter().all(Value::is_number),
                    _ => true,
                },
                (Value::String(_), Value::String(_))
                | (Value::Bool(_), Value::Bool(_))
                | (Value::Object(_), Value::Object(_))
                | (Value::Null, _) => true,
                _ => false,
            };
            if !fits {
                let expected = match &*slot {
                    Value::Number(d) if d.is_u64() => "a whole number ≥ 0",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Bool(_) => "true or false",
                    Value::Array(d) if d.first().is_some_and(Value::is_u64) => {
                        "a list of whole numbers ≥ 0"
                    }
                    Value::Array(_) => "a list",
                    _ => "a table",
                };
                return Err(format!(
                    "model config field `{path}` must be {expected}, got {v}"
                ));
            }
            *slot = v;
            Ok(())
        }
    }
}

/// `serde(deserialize_with)` for a [`ModelConfig`] with defaults for missing fields (see
/// [`ModelConfig::from_value`]).
pub fn deserialize_config_with_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ModelConfig, D::Error> {
    let value = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    ModelConfig::from_value(value).map_err(serde::de::Error::custom)
}

/// Which tokens a block's self-attention spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Full,
    Space,
    Time,
}

/// One transformer block with adaLN-Zero modulation (DiT): the gates start at zero, so a new
/// block is the identity.
#[derive(Module, Debug)]
pub struct DitBlock {
    /// conditioning → shift, scale, gate for attention and for the MLP
    pub ada: Linear,
    pub attn: Attention,
    pub cross_norm: LayerNorm,
    pub cross: Attention,
    pub mlp: Mlp,
    #[module(skip)]
    pub span: Span,
}

impl DitBlock {
    /// # Shapes
    /// - `x`: `[B, N, d]` with `N = t·h·w` tokens in (time, row, column) order
    /// - `c`: `[B, d]` conditioning (after SiLU)
    /// - returns `[B, N, d]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        c: Tensor<2>,
        text: &TextContext,
        grid: [usize; 3],
    ) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let [t, h, w] = grid;
        let m = self.ada.forward(c).chunk(6, 1); // 6 × [B, d]
        let y = adaln(x.clone(), m[0].clone(), m[1].clone());
        let y = match self.span {
            Span::Full => self.attn.forward(y.clone(), y, None),
            Span::Space => {
                let y = y.reshape([b * t, h * w, d]); // frames as batch
                self.attn.forward(y.clone(), y, None).reshape([b, n, d])
            }
            Span::Time => {
                let y = y
                    .reshape([b, t, h * w, d])
                    .swap_dims(1, 2)
                    .reshape([b * h * w, t, d]); // positions as batch
                self.attn
                    .forward(y.clone(), y, None)
                    .reshape([b, h * w, t, d])
                    .swap_dims(1, 2)
                    .reshape([b, n, d])
            }
        };
        let x = x + y * m[2].clone().unsqueeze_dim::<3>(1);
        let x = x.clone()
            + self.cross.forward(
                layers::layer_norm_module(&self.cross_norm, x),
                text.tokens.clone(),
                Some(text.bias.clone()),
            );
        let y = self
            .mlp
            .forward(adaln(x.clone(), m[3].clone(), m[4].clone()));
        x + y * m[5].clone().unsqueeze_dim::<3>(1)
    }
}

/// The video diffusion transformer. See the module docs for the data flow.
#[derive(Module, Debug)]
pub struct VideoDit {
    pub text: TextEncoder,
    pub stem: Option<Conv3d>,
    pub patch_embed: Conv3d,
    pub t_fc1: Linear,
    pub t_fc2: Linear,
    pub text_pool: Linear,
    pub blocks: Vec<DitBlock>,
    pub final_ada: Linear,
    pub final_proj: Linear,
    pub head1: Option<Conv3d>,
    pub head2: Option<Conv3d>,
    /// Conditioning → shift, scale of the head's hidden channels (see `head_modulation`).
    pub head_ada: Option<Linear>,
    /// Pixel-resolution residual conv blocks after the stem and in the head (`conv_blocks`).
    pub stem_blocks: Vec<ConvBlock>,
    pub head_blocks: Vec<ConvBlock>,
    #[module(skip)]
    pub patch: [usize; 3],
    #[module(skip)]
    pub dim: usize,
    #[module(skip)]
    pub sigma_data: f32,
    #[module(skip)]
    pub prediction: Prediction,
}

/// EDM-style preconditioning (Karras et al. 2022) carried over to rectified flow, for data of
/// RMS σ and unit noise: `x_t = (1 − t)·x0 + t·ε`, `v = ε − x0`.
/// Returns `(c_in, c_skip, c_out)` with `v̂ = c_skip·x_t + c_out·F(c_in·x_t)`: `c_in` gives the
/// network unit-variance input at every t, `c_skip·x_t` is the best linear guess of `v` (so the
/// identity path — `v ≈ x_t` at t = 1 — exists from the first step), and `c_out` scales the
/// network's residual to unit variance.
pub fn preconditioning(t: f32, sigma: f32) -> (f32, f32, f32) {
    let s2 = sigma * sigma;
    let var_x = (1.0 - t).powi(2) * s2 + t * t;
    let cov = t - (1.0 - t) * s2;
    let c_in = 1.0 / var_x.sqrt();
    let c_skip = cov / var_x;
    let c_out = (1.0 + s2 - cov * cov / var_x).max(1e-8).sqrt();
    (c_in, c_skip, c_out)
}

/// [`preconditioning`]'s factors per sample, on the device, and the two ends of a network
/// wrapped in them (shared by every backbone).
pub struct Preconditioning {
    /// `[B, 1, 1, 1, 1]` each
    pub c_in: Tensor<5>,
    pub c_skip: Tensor<5>,
    pub c_out: Tensor<5>,
    pub t: Tensor<5>,
}

impl Preconditioning {
    /// Factors for times `t: [B]` and data RMS `sigma`.
    pub fn new(t: Tensor<1>, sigma: f32) -> Self {
        let b = t.dims()[0];
        let s2 = sigma * sigma;
        let tt = t.reshape([b, 1, 1, 1, 1]);
        let one_minus = tt.clone().neg() + 1.0;
        let var_x = one_minus.clone().powi_scalar(2) * s2 + tt.clone().powi_scalar(2);
        let cov = tt.clone() - one_minus * s2;
        let c_in = var_x.clone().sqrt().recip();
        let c_skip = cov.clone() / var_x.clone();
        let c_out = ((cov.powi_scalar(2) / var_x).neg() + (1.0 + s2))
            .clamp_min(1e-8)
            .sqrt();
        Self {
            c_in,
            c_skip,
            c_out,
            t: tt,
        }
    }

    /// The network's input `c_in·x_t`. `[B, 3, T, H, W]`
    pub fn input(&self, x: Tensor<5>) -> Tensor<5> {
        x * self.c_in.clone()
    }

    /// The velocity from the network's output `f` and the noisy input `x`. `[B, 3, T, H, W]`
    pub fn output(&self, prediction: Prediction, x: Tensor<5>, f: Tensor<5>) -> Tensor<5> {
        match prediction {
            Prediction::Velocity => x * self.c_skip.clone() + f * self.c_out.clone(),
            Prediction::Clean => (x - f) / self.t.clone().clamp_min(CLEAN_T_MIN),
        }
    }
}

impl VideoDit {
    /// Encode prompts once; reuse the context for every denoising step.
    pub fn encode_text(&self, prompts: &[String], device: &Device) -> TextContext {
        self.text.forward(prompts, device)
    }

    /// Velocity prediction.
    ///
    /// # Shapes
    /// - `x`: `[B, 3, T, H, W]` noisy clip, `t`: `[B]` times in [0, 1] (1 = pure noise)
    /// - returns `[B, 3, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, t: Tensor<1>, text: &TextContext) -> Tensor<5> {
        self.forward_taps(x, t, text, &[]).0
    }

    /// Velocity prediction (preconditioned, see [`preconditioning`]) plus the token features `[B, N, d]` after each block index in `taps`
    /// (1-based: `taps = [depth]` is the last block's output).
    pub fn forward_taps(
        &self,
        x: Tensor<5>,
        t: Tensor<1>,
        text: &TextContext,
        taps: &[usize],
    ) -> (Tensor<5>, Vec<Tensor<3>>) {
        let (v, tapped) = self.run(x, t, text, taps, true);
        (v.expect("run with the head returns the velocity"), tapped)
    }

    /// Only the token features `[B, N, d]` after each block index in `taps` (1-based): the
    /// blocks after the last tap and the output head are not run (the APT discriminator's
    /// backbone).
    pub fn features(
        &self,
        x: Tensor<5>,
        t: Tensor<1>,
        text: &TextContext,
        taps: &[usize],
    ) -> Vec<Tensor<3>> {
        self.run(x, t, text, taps, false).1
    }

    fn run(
        &self,
        x: Tensor<5>,
        t: Tensor<1>,
        text: &TextContext,
        taps: &[usize],
        head: bool,
    ) -> (Option<Tensor<5>>, Vec<Tensor<3>>) {
        let [b, _, frames, height, width] = x.dims();
        let [pt, ph, pw] = self.patch;
        let device = x.device();
        let pre = Preconditioning::new(t.clone(), self.sigma_data);
        let x_in = pre.input(x.clone());
        let grid = [frames / pt, height / ph, width / pw];
        let n = grid[0] * grid[1] * grid[2];
        let d = self.dim;

        let c = layers::condition(&self.t_fc1, &self.t_fc2, &self.text_pool, t, text); // [B, d]

        let skip = self.stem.as_ref().map(|s| {
            let mut f = silu(layers::conv3d(s, x_in.clone())); // [B, cs, T, H, W]
            for blk in &self.stem_blocks {
                f = blk.forward(f, c.clone());
            }
            f
        });
        let h = self.patch_embed.forward(skip.clone().unwrap_or(x_in)); // [B, d, t, h, w]
        let pos = Tensor::<2>::from_data(
            TensorData::new(factorised_positions(grid[0], grid[1], grid[2], d), [n, d]),
            &device,
        );
        let mut tokens = h.reshape([b, d, n]).swap_dims(1, 2) + pos.unsqueeze_dim::<3>(0); // [B, N, d]

        let mut tapped = Vec::with_capacity(taps.len());
        let last = if head {
            self.blocks.len()
        } else {
            taps.iter()
                .copied()
                .max()
                .unwrap_or(0)
                .min(self.blocks.len())
        };
        for (i, block) in self.blocks.iter().enumerate().take(last) {
            tokens = block.forward(tokens, c.clone(), text, grid);
            if taps.contains(&(i + 1)) {
                tapped.push(tokens.clone());
            }
        }
        if !head {
            return (None, tapped);
        }
        let m = self.final_ada.forward(c.clone()).chunk(2, 1);
        let out = self
            .final_proj
            .forward(adaln(tokens, m[0].clone(), m[1].clone())); // [B, N, pt·ph·pw·co]
        let co = out.dims()[2] / (pt * ph * pw);
        let out = out
            .reshape([b, grid[0], grid[1], grid[2], pt, ph, pw, co])
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, co, frames, height, width]); // [B, co, T, H, W]
        let f = match (skip, &self.head1, &self.head2) {
            (Some(skip), Some(h1), Some(h2)) => {
                let hidden = layers::conv3d(h1, Tensor::cat(vec![out, skip], 1)); // [B, cs, T, H, W]
                let mut hidden = match &self.head_ada {
                    Some(ada) => {
                        let cs = hidden.dims()[1];
                        let m = ada.forward(c.clone()).chunk(2, 1); // shift, scale: [B, cs]
                        hidden * (m[1].clone().reshape([b, cs, 1, 1, 1]) + 1.0)
                            + m[0].clone().reshape([b, cs, 1, 1, 1])
                    }
                    None => hidden,
                };
                for blk in &self.head_blocks {
                    hidden = blk.forward(hidden, c.clone());
                }
                layers::conv3d(h2, silu(hidden))
            }
            _ => out,
        };
        (Some(pre.output(self.prediction, x, f)), tapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditioning_is_the_best_linear_predictor() {
        // Monte-Carlo check on Gaussian data of RMS σ: c_skip minimises E|v − c·x_t|², c_in
        // normalises x_t, and c_out is the residual's standard deviation.
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let sigma = 0.8f32;
        for t in [0.0f32, 0.3, 0.7, 1.0] {
            let (c_in, c_skip, c_out) = preconditioning(t, sigma);
            let n = 200_000;
            let (mut sxx, mut sxv, mut svv) = (0f64, 0f64, 0f64);
            for _ in 0..n {
                let x0 = sigma * crate::flow::standard_normal(&mut rng);
                let e = crate::flow::standard_normal(&mut rng);
                let (xt, v) = ((1.0 - t) * x0 + t * e, e - x0);
                sxx += (xt * xt) as f64;
                sxv += (xt * v) as f64;
                svv += (v * v) as f64;
            }
            let best = (sxv / sxx) as f32;
            let resid = ((svv - sxv * sxv / sxx) / n as f64).sqrt() as f32;
            assert!(
                (c_skip - best).abs() < 0.02,
                "t={t}: c_skip {c_skip} vs {best}"
            );
            assert!(
                (c_in * ((sxx / n as f64).sqrt() as f32) - 1.0).abs() < 0.02,
                "t={t}"
            );
            assert!(
                (c_out - resid).abs() < 0.02,
                "t={t}: c_out {c_out} vs {resid}"
            );
        }
    }

    pub fn tiny() -> ModelConfig {
        ModelConfig::new(
            TextEncoderConfig::new()
                .with_dim(32)
                .with_depth(1)
                .with_heads(2)
                .with_max_len(32),
        )
        .with_frames(4)
        .with_height(16)
        .with_width(16)
        .with_dim(32)
        .with_depth(2)
        .with_heads(2)
        .with_stem_channels(8)
    }

    #[test]
    fn shapes_and_taps() {
        let device = Device::flex();
        for mode in [AttentionMode::Full, AttentionMode::Factorised] {
            for stem in [0, 8] {
                let mut cfg = tiny()
                    .with_attention(mode)
                    .with_stem_channels(stem)
                    .with_patch([2, 4, 4])
                    .with_head_modulation(stem > 0);
                cfg.text.conv_kernel = if stem > 0 { 5 } else { 0 };
                cfg.validate().unwrap();
                let model = cfg.init_dit(&device);
                let x = Tensor::<5>::random(
                    [2, 3, 4, 16, 16],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let t = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.9], [2]), &device);
                let text = model.encode_text(&["a red ball".into(), "".into()], &device);
                let (v, taps) = model.forward_taps(x, t, &text, &[1, 2]);
                assert_eq!(v.dims(), [2, 3, 4, 16, 16]);
                assert_eq!(taps.len(), 2);
                assert_eq!(taps[0].dims(), [2, 2 * 4 * 4, 32]);
            }
        }
    }

    #[test]
    fn head_modulation_starts_as_the_identity_and_bad_options_are_rejected() {
        let device = Device::flex();
        let cfg = tiny().with_head_modulation(true);
        cfg.validate().unwrap();
        let model = cfg.init_dit(&device);
        let x = Tensor::<5>::random(
            [2, 3, 4, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.05f32, 0.7], [2]), &device);
        let text = model.encode_text(&["a red ball".into(), "".into()], &device);
        let with = model.forward(x.clone(), t.clone(), &text);
        let mut plain = model.clone();
        plain.head_ada = None;
        let without = plain.forward(x, t, &text);
        let diff: f32 = (with - without).abs().max().into_scalar();
        assert!(
            diff < 1e-6,
            "zero-initialised head modulation changed the output by {diff}"
        );

        assert!(
            tiny()
                .with_head_modulation(true)
                .with_stem_channels(0)
                .validate()
                .is_err()
        );
        // Clean-clip parametrisation: a fresh model (zero head) predicts x̂0 = 0, so v̂ = x_t / t.
        let clean = tiny().with_prediction(Prediction::Clean).init_dit(&device);
        let x = Tensor::<5>::random(
            [2, 3, 4, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.01f32, 0.5], [2]), &device);
        let v = clean.forward(
            x.clone(),
            t,
            &clean.encode_text(&["a".into(), "b".into()], &device),
        );
        let expect = Tensor::cat(
            vec![
                x.clone().narrow(0, 0, 1) / CLEAN_T_MIN,
                x.narrow(0, 1, 1) / 0.5,
            ],
            0,
        );
        let diff: f32 = (v - expect).abs().max().into_scalar();
        assert!(
            diff < 1e-4,
            "clean prediction: v̂ ≠ (x_t − 0)/max(t, {CLEAN_T_MIN}) by {diff}"
        );
        // Configs written before a field existed load with its default; unknown fields are errors.
        let old = serde_json::json!({"dim": 64, "text": {"dim": 32, "depth": 1, "heads": 2, "max_len": 32}});
        let cfg = ModelConfig::from_value(old).unwrap();
        assert_eq!(
            (
                cfg.dim,
                cfg.head_modulation,
                cfg.text.conv_kernel,
                cfg.text.dim,
                cfg.frames
            ),
            (64, false, 0, 32, 8)
        );
        assert_eq!(cfg.prediction, Prediction::Velocity);
        let err = ModelConfig::from_value(serde_json::json!({"text": {"dimm": 3}})).unwrap_err();
        assert!(err.contains("text.dimm"), "{err}");
        let mut even = tiny();
        even.text.conv_kernel = 4;
        assert!(even.validate().is_err());
    }

    #[test]
    fn conv_blocks_start_as_the_identity_and_learn() {
        let device = Device::flex();
        let cfg = tiny().with_head_modulation(true).with_conv_blocks(2);
        cfg.validate().unwrap();
        assert!(
            tiny()
                .with_stem_channels(0)
                .with_conv_blocks(1)
                .validate()
                .is_err()
        );
        let model = cfg.init_dit(&device);
        assert_eq!((model.stem_blocks.len(), model.head_blocks.len()), (2, 2));
        let x = Tensor::<5>::random(
            [2, 3, 4, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.9], [2]), &device);
        let text = model.encode_text(&["a red ball".into(), "".into()], &device);
        let with = model.forward(x.clone(), t.clone(), &text);
        let mut plain = model.clone();
        plain.stem_blocks.clear();
        plain.head_blocks.clear();
        let diff: f32 = (with - plain.forward(x.clone(), t.clone(), &text))
            .abs()
            .max()
            .into_scalar();
        assert!(
            diff < 1e-6,
            "zero-initialised conv blocks changed the output by {diff}"
        );
        // The zero-initialised output convolution gets a gradient (so the block can learn).
        let ad = device.clone().autodiff();
        let mut m = cfg.init_dit(&ad);
        // The head's zero-initialised output convolution blocks every gradient upstream at
        // step 0 (adaLN-Zero style); give it weights as after the first update.
        m.head2 = Some(
            Conv3dConfig::new([cfg.stem_channels, 3], [1, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
                .init(&ad),
        );
        let text = m.encode_text(&["a red ball".into(), "".into()], &ad);
        let loss = m
            .forward(
                Tensor::from_data(x.into_data(), &ad),
                Tensor::from_data(t.into_data(), &ad),
                &text,
            )
            .powi_scalar(2)
            .mean();
        let grads = loss.backward();
        for (name, blk) in [("stem", &m.stem_blocks[0]), ("head", &m.head_blocks[1])] {
            let g: f32 = blk
                .conv2
                .weight
                .val()
                .grad(&grads)
                .expect("gradient")
                .abs()
                .sum()
                .into_scalar();
            assert!(
                g > 0.0,
                "no gradient reaches the {name} conv block's output convolution"
            );
        }
    }

    #[test]
    fn unpatchify_inverts_patchify_layout() {
        // The head's reshape/permute must put patch element (dt, dy, dx, c) back at
        // (c, t·pt + dt, y·ph + dy, x·pw + dx): build tokens from a known clip and invert.
        let device = Device::flex();
        let (b, co, frames, height, width) = (1, 2, 4, 8, 8);
        let [pt, ph, pw] = [2, 4, 2];
        let grid = [frames / pt, height / ph, width / pw];
        let clip: Vec<f32> = (0..b * co * frames * height * width)
            .map(|i| i as f32)
            .collect();
        let mut tokens = vec![0f32; clip.len()];
        let mut k = 0;
        for gt in 0..grid[0] {
            for gy in 0..grid[1] {
                for gx in 0..grid[2] {
                    for dt in 0..pt {
                        for dy in 0..ph {
                            for dx in 0..pw {
                                for c in 0..co {
                                    let (t, y, x) = (gt * pt + dt, gy * ph + dy, gx * pw + dx);
                                    tokens[k] = clip[((c * frames + t) * height + y) * width + x];
                                    k += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        let out = Tensor::<1>::from_data(TensorData::new(tokens, [clip.len()]), &device)
            .reshape([b, grid[0], grid[1], grid[2], pt, ph, pw, co])
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, co, frames, height, width]);
        let back: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(back, clip);
    }
}

#[cfg(test)]
mod conv_tests {
    use super::*;

    use flick_shaders::textbook::conv3d as naive_conv3d;

    #[test]
    fn conv3d_matches_a_direct_convolution() {
        // The stem (3×3×3, padding 1), the patch embedding (kernel = stride = 2×4×4) and the
        // head (1×3×3) at clip-like sizes, on the plain and the autodiff CPU backend.
        for device in [Device::flex(), Device::flex().autodiff()] {
            for (ci, co, k, stride, pad) in [
                (3, 5, [3, 3, 3], [1, 1, 1], [1, 1, 1]),
                (4, 6, [2, 4, 4], [2, 4, 4], [0, 0, 0]),
                (6, 3, [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            ] {
                let conv = Conv3dConfig::new([ci, co], k)
                    .with_stride(stride)
                    .with_padding(PaddingConfig3d::Explicit(pad[0], pad[1], pad[2]))
                    .init(&device);
                let xs = [2, ci, 8, 16, 12];
                let x =
                    Tensor::<5>::random(xs, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
                let y = conv.forward(x.clone());
                let w: Vec<f32> = conv.weight.val().into_data().try_to_vec().unwrap();
                let bias: Vec<f32> = conv
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_to_vec()
                    .unwrap();
                let xv: Vec<f32> = x.into_data().try_to_vec().unwrap();
                let (expect, shape) =
                    naive_conv3d(&xv, xs, &w, [co, ci, k[0], k[1], k[2]], &bias, stride, pad);
                assert_eq!(y.dims(), shape);
                let got: Vec<f32> = y.into_data().try_to_vec().unwrap();
                let diff = got
                    .iter()
                    .zip(&expect)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    diff < 1e-4,
                    "conv {ci}→{co} kernel {k:?} stride {stride:?}: differs by {diff}"
                );
            }
        }
    }

    #[test]
    fn conv3d_gradients_match_directional_differences() {
        // L(x, W) = Σ conv(x; W)·g is linear in x and in W, so for any direction e
        // L(x + e) − L(x) = ⟨∂L/∂x, e⟩ exactly (up to rounding): checks the backward kernels.
        let ad = Device::flex().autodiff();
        for (ci, co, k, stride, pad) in [
            (3, 5, [3, 3, 3], [1, 1, 1], [1, 1, 1]),
            (4, 6, [2, 4, 4], [2, 4, 4], [0, 0, 0]),
            (6, 3, [1, 3, 3], [1, 1, 1], [0, 1, 1]),
        ] {
            let conv = Conv3dConfig::new([ci, co], k)
                .with_stride(stride)
                .with_padding(PaddingConfig3d::Explicit(pad[0], pad[1], pad[2]))
                .init(&ad);
            let xs = [2, ci, 8, 16, 12];
            let rnd = |s: [usize; 5]| {
                Tensor::<5>::random(s, burn::tensor::Distribution::Normal(0.0, 1.0), &ad)
            };
            let x = Tensor::<5>::from_data(
                Tensor::<5>::random(
                    xs,
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &Device::flex(),
                )
                .into_data(),
                &ad,
            )
            .require_grad();
            let y = conv.forward(x.clone());
            let g = rnd(y.dims());
            let loss = (y * g.clone()).sum();
            let grads = loss.backward();
            let gx = x.grad(&grads).unwrap();
            let gw = conv.weight.val().grad(&grads).unwrap();
            for _ in 0..3 {
                let e = rnd(xs).detach();
                let lhs: f32 = ((conv.forward(x.clone().detach() + e.clone())
                    - conv.forward(x.clone().detach()))
                    * g.clone())
                .sum()
                .into_scalar();
                let rhs: f32 = (gx.clone() * e.inner()).sum().into_scalar();
                assert!(
                    (lhs - rhs).abs() < 1e-2 * (1.0 + lhs.abs()),
                    "∂/∂x for kernel {k:?}: {lhs} vs {rhs}"
                );
                let ew = Tensor::<5>::random(
                    conv.weight.dims(),
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &Device::flex(),
                );
                let mut shifted = conv.clone();
                shifted.weight = burn::module::Param::from_tensor(Tensor::from_data(
                    (conv.weight.val().inner() + ew.clone()).into_data(),
                    &ad,
                ));
                let lhs: f32 = ((shifted.forward(x.clone().detach())
                    - conv.forward(x.clone().detach()))
                    * g.clone())
                .sum()
                .into_scalar();
                let rhs: f32 = (gw.clone() * ew).sum().into_scalar();
                assert!(
                    (lhs - rhs).abs() < 1e-2 * (1.0 + lhs.abs()),
                    "∂/∂W for kernel {k:?}: {lhs} vs {rhs}"
                );
            }
        }
    }
}
