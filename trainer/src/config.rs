//! Training configuration files (`configs/*.toml`), resolved and written beside every run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use flick_core::flow::FlowConfig;
use flick_core::model::ModelConfig;
use serde::{Deserialize, Serialize};

/// `flick train-teacher` configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherConfig {
    /// Fields left out take their defaults (`ModelConfig::from_value`).
    #[serde(deserialize_with = "flick_core::model::deserialize_config_with_defaults")]
    pub model: ModelConfig,
    pub flow: FlowConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub sample: SampleConfig,
}

/// Where clips come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Seed of the procedural source (ignored for folders).
    pub seed: u64,
    /// A folder dataset instead of the procedural shapes (GIFs / PNG-frame folders + captions).
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Probability of a second object in a procedural clip.
    #[serde(default = "default_two_object_prob")]
    pub two_object_prob: f32,
    /// Short-clip steps (image-and-video joint training, as APT trains on images before clips):
    /// a share `short_share` of the steps, evenly spaced, trains on clips of `short_frames`
    /// frames (a multiple of the model's temporal patch, below `model.frames`) in batches of
    /// `short_batch_size`. Tokens scale with frames and attention with their square, so short
    /// clips are cheap (teacher-small on the 2-core CPU: ≈ 22 two-frame clips/s against ≈ 7
    /// eight-frame ones) and what an object looks like gets more updates per CPU-minute.
    /// 0 = off.
    #[serde(default)]
    pub short_frames: usize,
    #[serde(default)]
    pub short_share: f32,
    #[serde(default)]
    pub short_batch_size: usize,
}

impl DataConfig {
    /// Whether step `step` trains on short clips (evenly spaced: `⌊(s+1)·p⌋ > ⌊s·p⌋`).
    pub fn is_short_step(&self, step: u64) -> bool {
        self.short_frames > 0
            && ((step + 1) as f64 * self.short_share as f64).floor()
                > (step as f64 * self.short_share as f64).floor()
    }
}

fn default_two_object_prob() -> f32 {
    0.25
}

/// Optimisation and bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f32,
    pub warmup_steps: u64,
    /// Linear learning-rate cool-down over the last this-many steps of `steps`, down to 10% of
    /// `lr` (0 = constant after warm-up).
    #[serde(default)]
    pub cooldown_steps: u64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f32,
    /// EMA decay of the weights used for sampling and saved as the model.
    pub ema_decay: f32,
    /// Probability of replacing a caption by the empty prompt (classifier-free guidance).
    pub caption_dropout: f32,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub sample_every: u64,
    /// Consecutive non-finite steps after which training stops with an error.
    #[serde(default = "crate::run::default_max_bad_steps")]
    pub max_bad_steps: u64,
    /// Checkpoints kept: the current state and, above 1, the newest earlier ones in
    /// `checkpoints/` (hard links; the oldest deleted first).
    #[serde(default = "crate::run::default_keep_checkpoints")]
    pub keep_checkpoints: u64,
}

/// Sampling defaults recorded in the checkpoint (what `flick generate` uses).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    pub steps: usize,
    pub guidance: f32,
    /// Prompts of the sample grids written during training.
    pub prompts: Vec<String>,
}

impl TeacherConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid teacher config", path.display()))?;
        cfg.check()
            .with_context(|| format!("{} is not a valid teacher config", path.display()))?;
        Ok(cfg)
    }

    /// Every setting in range (the model's geometry, the training numbers).
    pub fn check(&self) -> anyhow::Result<()> {
        self.model.validate().context("[model]")?;
        let t = &self.train;
        anyhow::ensure!(
            (1..=65_536).contains(&t.batch_size),
            "train.batch_size must be from 1 to 65536, got {}",
            t.batch_size
        );
        anyhow::ensure!(
            (1..=100_000_000).contains(&t.steps),
            "train.steps must be from 1 to 100000000, got {}",
            t.steps
        );
        for (key, v) in [
            ("train.lr", t.lr),
            ("train.beta1", t.beta1),
            ("train.beta2", t.beta2),
            ("train.grad_clip", t.grad_clip),
            ("train.weight_decay", t.weight_decay),
            ("train.caption_dropout", t.caption_dropout),
        ] {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "{key} must be a number ≥ 0, got {v}"
            );
        }
        anyhow::ensure!(
            t.lr > 0.0 && t.beta1 < 1.0 && t.beta2 < 1.0 && t.caption_dropout <= 1.0,
            "train.lr must be > 0, train.beta1 and train.beta2 below 1, train.caption_dropout at most 1"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.train.ema_decay),
            "train.ema_decay must be in [0, 1)"
        );
        anyhow::ensure!(
            self.train.checkpoint_every > 0 && self.train.log_every > 0,
            "train.checkpoint_every and train.log_every must be ≥ 1"
        );
        let d = &self.data;
        if d.short_frames > 0 {
            let pt = self.model.patch[0];
            anyhow::ensure!(
                d.short_frames.is_multiple_of(pt) && d.short_frames < self.model.frames,
                "data.short_frames = {} must be a multiple of the temporal patch {pt} and below model.frames = {}",
                d.short_frames,
                self.model.frames
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&d.short_share) && d.short_share > 0.0,
                "data.short_share must be in (0, 1] when data.short_frames is set"
            );
            anyhow::ensure!(
                d.short_batch_size > 0,
                "data.short_batch_size must be ≥ 1 when data.short_frames is set"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_steps_are_evenly_spaced_at_the_share() {
        let mut d = DataConfig {
            seed: 1,
            folder: None,
            two_object_prob: 0.25,
            short_frames: 2,
            short_share: 0.25,
            short_batch_size: 8,
        };
        let short: Vec<u64> = (0..12).filter(|&s| d.is_short_step(s)).collect();
        assert_eq!(short, vec![3, 7, 11]);
        d.short_share = 0.5;
        assert_eq!((0..100).filter(|&s| d.is_short_step(s)).count(), 50);
        d.short_frames = 0;
        assert!((0..100).all(|s| !d.is_short_step(s)));
    }
}
