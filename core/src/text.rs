//! Text: a byte-level tokenizer (any string is valid input) and a small transformer text
//! encoder trained jointly with the teacher.
//!
//! Prompts are normalised (lower-cased, whitespace collapsed) because every training caption
//! is lower-case; the empty prompt is the unconditional input for classifier-free guidance.

/// Padding id (masked out of attention).
pub const PAD: u32 = 0;
/// Beginning of text.
pub const BOS: u32 = 1;
/// End of text.
pub const EOS: u32 = 2;
/// Ids 3..259 are the 256 byte values.
pub const VOCAB: usize = 259;

/// Token ids of one prompt, padded to a fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// `max_len` ids: BOS, bytes…, EOS, PAD…
    pub ids: Vec<u32>,
    /// Number of non-padding ids.
    pub len: usize,
    /// Whether the prompt was cut to fit.
    pub truncated: bool,
}

/// Lower-case and collapse whitespace, as the training captions are written.
pub fn normalize(prompt: &str) -> String {
    prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A prompt given as bytes (from a file, a socket, a foreign caller): the text if it is UTF-8,
/// else an error that says at which byte it stops being UTF-8. (The tokenizer reads bytes, but
/// captions are text: a prompt that is not would be read as something nobody wrote.)
pub fn prompt_from_bytes(bytes: &[u8]) -> Result<String, crate::Error> {
    std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
        crate::Error::Config(format!(
            "the prompt is not UTF-8 text: invalid byte at offset {} of {}",
            e.valid_up_to(),
            bytes.len()
        ))
    })
}

/// Tokenize `prompt` into exactly `max_len` (≥ 2) ids. Over-long prompts are cut at a byte
/// boundary and flagged (`truncated`); nothing panics on any input.
pub fn tokenize(prompt: &str, max_len: usize) -> Tokens {
    assert!(max_len >= 2, "max_len must leave room for BOS and EOS");
    let text = normalize(prompt);
    let bytes = text.as_bytes();
    let room = max_len - 2;
    let truncated = bytes.len() > room;
    let mut ids = Vec::with_capacity(max_len);
    ids.push(BOS);
    ids.extend(bytes.iter().take(room).map(|&b| b as u32 + 3));
    ids.push(EOS);
    let len = ids.len();
    ids.resize(max_len, PAD);
    Tokens {
        ids,
        len,
        truncated,
    }
}

/// Decode ids back to text (lossy for cut UTF-8 sequences); specials are dropped.
pub fn detokenize(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids
        .iter()
        .filter(|&&i| i >= 3 && (i as usize) < VOCAB)
        .map(|&i| (i - 3) as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

use burn::module::Param;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, PaddingConfig1d,
};
use burn::prelude::*;

use crate::model::layers::{Attention, AttentionConfig, Mlp};

/// Configuration of the [`TextEncoder`].
#[derive(Config, Debug, PartialEq)]
pub struct TextEncoderConfig {
    /// Tokens per prompt, BOS and EOS included; longer prompts are truncated (and reported).
    #[config(default = 96)]
    pub max_len: usize,
    #[config(default = 128)]
    pub dim: usize,
    #[config(default = 2)]
    pub depth: usize,
    #[config(default = 4)]
    pub heads: usize,
    /// Width (odd) of a 1-D convolution over the byte embeddings, added to them before the
    /// transformer: every token starts with features of its neighbourhood (a word is ≤ 9 bytes
    /// here), so words need not be assembled by attention from near-zero learned positions.
    /// 0 = none (the first bundled models).
    #[config(default = 0)]
    pub conv_kernel: usize,
}

/// A small pre-norm transformer over byte tokens, trained jointly with the video model.
#[derive(Module, Debug)]
pub struct TextEncoder {
    pub embed: Embedding,
    pub pos: Param<Tensor<2>>,
    pub conv: Option<Conv1d>,
    pub layers: Vec<TextLayer>,
    pub norm: LayerNorm,
    #[module(skip)]
    pub max_len: usize,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct TextLayer {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

/// Encoded prompts: token features and the additive padding bias for attention.
#[derive(Clone, Debug)]
pub struct TextContext {
    /// `[B, L, dim]`
    pub tokens: Tensor<3>,
    /// `[B, L]`: 0 for real tokens, −1e4 for padding.
    pub bias: Tensor<2>,
    /// `[B, dim]`: mean of the real tokens' features.
    pub pooled: Tensor<2>,
}

impl TextEncoderConfig {
    pub fn init(&self, device: &Device) -> TextEncoder {
        let pos = Tensor::<2>::random(
            [self.max_len, self.dim],
            burn::tensor::Distribution::Normal(0.0, 0.02),
            device,
        );
        TextEncoder {
            embed: EmbeddingConfig::new(VOCAB, self.dim).init(device),
            pos: Param::from_tensor(pos),
            conv: (self.conv_kernel > 0).then(|| {
                let k = self.conv_kernel;
                // Zero-initialised: the branch starts as nothing and grows (an encoder gains it without
                // changing what it computes, e.g. when warm-starting from one without).
                Conv1dConfig::new(self.dim, self.dim, k)
                    .with_padding(PaddingConfig1d::Explicit(k / 2, k / 2))
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            }),
            layers: (0..self.depth)
                .map(|_| TextLayer {
                    norm1: LayerNormConfig::new(self.dim).init(device),
                    attn: AttentionConfig::new(self.dim, self.dim, self.heads).init(device),
                    norm2: LayerNormConfig::new(self.dim).init(device),
                    mlp: Mlp::new(self.dim, self.dim * 4, device),
                })
                .collect(),
            norm: LayerNormConfig::new(self.dim).init(device),
            max_len: self.max_len,
        }
    }
}

/// Tokenize a batch of prompts for an encoder with `max_len` tokens. Returns the ids
/// `[B, max_len]` as i64 data and, for each prompt, whether it was truncated.
pub fn tokenize_batch(prompts: &[String], max_len: usize) -> (Vec<i64>, Vec<usize>, Vec<bool>) {
    let mut ids = Vec::with_capacity(prompts.len() * max_len);
    let mut lens = Vec::with_capacity(prompts.len());
    let mut truncated = Vec::with_capacity(prompts.len());
    for p in prompts {
        let t = tokenize(p, max_len);
        ids.extend(t.ids.iter().map(|&i| i as i64));
        lens.push(t.len);
        truncated.push(t.truncated);
    }
    (ids, lens, truncated)
}

impl TextEncoder {
    /// Encode prompts (tokenized here; truncation is the caller's to report, see
    /// [`tokenize`]).
    ///
    /// # Shapes
    /// returns tokens `[B, max_len, dim]`, bias `[B, max_len]`, pooled `[B, dim]`.
    pub fn forward(&self, prompts: &[String], device: &Device) -> TextContext {
        let (b, l) = (prompts.len(), self.max_len);
        let (ids, lens, _) = tokenize_batch(prompts, l);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, l]), device);
        let mut mask = vec![0f32; b * l];
        let mut bias = vec![0f32; b * l];
        for (i, &n) in lens.iter().enumerate() {
            for j in 0..l {
                if j < n {
                    mask[i * l + j] = 1.0 / n as f32;
                } else {
                    bias[i * l + j] = -1e4;
                }
            }
        }
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, l]), device);
        let bias = Tensor::<2>::from_data(TensorData::new(bias, [b, l]), device);
        let e = self.embed.forward(ids); // [B, L, dim]
        let e = match &self.conv {
            Some(conv) => e.clone() + conv.forward(e.swap_dims(1, 2)).swap_dims(1, 2),
            None => e,
        };
        let mut x = e + self.pos.val().unsqueeze_dim::<3>(0); // [B, L, dim]
        for layer in &self.layers {
            let h = crate::model::layers::layer_norm_module(&layer.norm1, x.clone());
            x = x + layer.attn.forward(h.clone(), h, Some(bias.clone()));
            x = x.clone()
                + layer
                    .mlp
                    .forward(crate::model::layers::layer_norm_module(&layer.norm2, x));
        }
        let tokens = crate::model::layers::layer_norm_module(&self.norm, x); // [B, L, dim]
        let pooled = (tokens.clone() * mask.unsqueeze_dim::<3>(2))
            .sum_dim(1)
            .squeeze_dim::<2>(1); // [B, dim]
        TextContext {
            tokens,
            bias,
            pooled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_tokenize_and_round_trip() {
        for s in [
            "",
            "a red ball",
            "ünïcödé ✓ 日本語",
            "\0\u{7f}\u{feff}",
            "  Mixed   CASE\tand\nspace  ",
        ] {
            let t = tokenize(s, 64);
            assert_eq!(t.ids.len(), 64);
            assert_eq!(t.ids[0], BOS);
            assert_eq!(t.ids[t.len - 1], EOS);
            assert!(t.ids.iter().all(|&i| (i as usize) < VOCAB));
            assert!(!t.truncated);
            assert_eq!(detokenize(&t.ids), normalize(s));
        }
        assert_eq!(
            normalize("  Mixed   CASE\tand\nspace  "),
            "mixed case and space"
        );
        // Every byte value is representable.
        let all: Vec<u8> = (0..=255u8).collect();
        let lossy = String::from_utf8_lossy(&all).into_owned();
        assert!(tokenize(&lossy, 1024).len > 2);
    }

    #[test]
    fn long_prompts_are_truncated_and_flagged() {
        let long = "a big red ball ".repeat(40);
        let t = tokenize(&long, 32);
        assert!(t.truncated);
        assert_eq!(t.len, 32);
        assert_eq!(t.ids[31], EOS);
        // Cutting inside a multi-byte character must not panic.
        let t = tokenize(&"é".repeat(100), 11);
        assert!(t.truncated);
        assert_eq!(t.ids.len(), 11);
    }

    #[test]
    fn encoder_masks_padding() {
        let device = Device::flex();
        let enc = TextEncoderConfig::new()
            .with_dim(32)
            .with_depth(1)
            .with_heads(2)
            .with_max_len(24)
            .init(&device);
        let ctx = enc.forward(&["red".into(), "".into()], &device);
        assert_eq!(ctx.tokens.dims(), [2, 24, 32]);
        assert_eq!(ctx.pooled.dims(), [2, 32]);
        let bias: Vec<f32> = ctx.bias.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(bias[..6], [0.0, 0.0, 0.0, 0.0, 0.0, -1e4]); // BOS r e d EOS PAD
        assert_eq!(bias[24..27], [0.0, 0.0, -1e4]); // BOS EOS PAD
    }
}
