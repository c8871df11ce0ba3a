//! Training configuration files (`configs/*.toml`), resolved and written beside every run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use flick_core::flow::FlowConfig;
use flick_core::model::VideoDitConfig;
use serde::{Deserialize, Serialize};

/// `flick train-teacher` configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherConfig {
    /// Fields left out take their defaults (`VideoDitConfig::from_value`).
    #[serde(deserialize_with = "flick_core::model::deserialize_config_with_defaults")]
    pub model: VideoDitConfig,
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
    #[serde(default = "default_max_bad_steps")]
    pub max_bad_steps: u64,
}

fn default_max_bad_steps() -> u64 {
    20
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
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text).with_context(|| format!("{} is not a valid teacher config", path.display()))?;
        cfg.model.validate()?;
        anyhow::ensure!(cfg.train.batch_size > 0, "train.batch_size must be ≥ 1");
        anyhow::ensure!(cfg.train.steps > 0, "train.steps must be ≥ 1");
        anyhow::ensure!((0.0..1.0).contains(&cfg.train.ema_decay), "train.ema_decay must be in [0, 1)");
        anyhow::ensure!(cfg.train.checkpoint_every > 0 && cfg.train.log_every > 0, "train.checkpoint_every and train.log_every must be ≥ 1");
        Ok(cfg)
    }
}
