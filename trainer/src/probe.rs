//! `flick train-probe`: train the attribute probe (`flick_core::eval::probe`) on ground-truth
//! procedural clips, resumable, and report its accuracy on held-out real clips.
//!
//! Every batch is a function of `(seed, step)`: single-object clips of the training split, each
//! with Gaussian noise of a random level in `[0, noise_max]` added, so the probe also reads
//! clips that a generator left slightly noisy. Accuracy is measured on the held-out split (the
//! attribute combinations no training clip shows), from a different procedural seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::checkpoint::{NamedTensors, load_module, module_tensors, write_safetensors};
use flick_core::data::shapes::{ShapesConfig, ShapesSource, Split};
use flick_core::data::stack;
use flick_core::eval::probe::{self, HEADS, Probe, ProbeConfig};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, Replicas, data_parallel_grads};
use crate::run;

/// `configs/probe.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTrainConfig {
    pub probe: ProbeConfig,
    pub train: ProbeTrain,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTrain {
    pub steps: u64,
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up, then cosine decay to 0).
    pub lr: f32,
    pub warmup_steps: u64,
    pub weight_decay: f32,
    pub seed: u64,
    /// Seed of the procedural training clips.
    pub data_seed: u64,
    /// Seed of the held-out clips accuracy is measured on.
    pub eval_seed: u64,
    /// Largest standard deviation of the noise added to training clips.
    pub noise_max: f32,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    /// Held-out clips per accuracy measurement.
    pub eval_clips: usize,
    /// Consecutive non-finite steps after which training stops with an error.
    #[serde(default = "crate::run::default_max_bad_steps")]
    pub max_bad_steps: u64,
    /// Checkpoints kept: the current state and, above 1, the newest earlier ones in
    /// `checkpoints/` (hard links; the oldest deleted first).
    #[serde(default = "crate::run::default_keep_checkpoints")]
    pub keep_checkpoints: u64,
}

impl ProbeTrainConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid probe config", path.display()))?;
        anyhow::ensure!(
            cfg.train.batch_size >= 1 && cfg.train.steps >= 1,
            "probe config: batch_size and steps must be ≥ 1"
        );
        cfg.probe
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }
}

pub fn state_path(out: &Path) -> PathBuf {
    run::state_path(out)
}
pub fn model_path(out: &Path) -> PathBuf {
    out.join("probe.safetensors")
}

#[derive(Serialize)]
struct Metrics {
    step: u64,
    loss: f32,
    lr: f32,
    clips_per_s: f32,
    elapsed_s: f32,
    /// Updates skipped so far for a non-finite loss or gradient (all networks).
    skipped_steps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    heldout_accuracy: Option<BTreeMap<String, f64>>,
}

fn step_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0xA076_1D64_78BD_642F)
            ^ step.wrapping_add(1).wrapping_mul(0xE703_7ED1_A0B4_28DB),
    )
}

/// Per-head accuracies as a name → value map, plus `all`.
pub fn accuracy_map(per: [f64; 5], all: f64) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = HEADS
        .iter()
        .zip(per)
        .map(|((name, _), a)| (name.to_string(), a))
        .collect();
    m.insert("all".into(), all);
    m
}

/// Train (or resume) the probe; returns its final held-out accuracies.
pub fn train_probe(
    cfg: &ProbeTrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    replicas: &Replicas,
    quiet: bool,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let saved = run::open(out, resume)?;
    let pc = &cfg.probe;
    let tc = &cfg.train;
    let source = ShapesSource::new(
        ShapesConfig {
            frames: pc.frames,
            height: pc.height,
            width: pc.width,
            two_object_prob: 0.0,
        },
        tc.data_seed,
    )?;
    let ad = device.clone().autodiff();
    let shares = replicas.shares(&ad);
    let mut model: Probe = run::seeded(device, tc.seed, || pc.init(&ad));
    let mut optim = AdamW::new(0.9, 0.999, 1e-8, tc.weight_decay);
    let mut step = 0u64;
    if let Some(saved) = saved {
        let saved_cfg: ProbeConfig = serde_json::from_str(
            saved
                .meta
                .get("config")
                .context("probe state lacks its config")?,
        )?;
        if &saved_cfg != pc {
            bail!(
                "{} was written for another probe config; start a new run folder",
                state_path(out).display()
            );
        }
        step = saved.step()?;
        model = load_module(model, &saved.tensors, "model.", &ad)?;
        optim.load_state(&saved.tensors, saved.field("adam_t")?.parse()?, device);
        eprintln!("resumed from {} at step {step}", state_path(out).display());
    }
    run::write_config(out, cfg)?;
    eprintln!("probe: {} parameters", flick_core::params::count(&model));

    let mut progress = run::Progress::start(out, tc.steps, step, quiet)?;
    let mut guard = run::Guard::new("probe", "a lower train.lr", tc.max_bad_steps, 0);
    let mut saved_step = step;
    let b = tc.batch_size;
    let mut last_acc = BTreeMap::new();
    while step < tc.steps {
        let mut rng = step_rng(tc.seed, step);
        let samples: Vec<_> = (0..b as u64)
            .map(|i| source.sample(Split::Train, step * b as u64 + i))
            .collect();
        let labels: Vec<[usize; 5]> = samples
            .iter()
            .map(|s| probe::labels(&s.attributes))
            .collect();
        let clips: Vec<_> = samples.into_iter().map(|s| s.clip).collect();
        let (mut x, shape) = stack(&clips);
        let per_clip = x.len() / b;
        for chunk in x.chunks_mut(per_clip) {
            let level = rng.random::<f32>() * tc.noise_max;
            for v in chunk.iter_mut() {
                *v += level * flick_core::flow::standard_normal(&mut rng);
            }
        }
        let warm = ((step + 1) as f32 / tc.warmup_steps.max(1) as f32).min(1.0);
        let lr = tc.lr
            * warm
            * 0.5
            * (1.0 + (std::f32::consts::PI * step as f32 / tc.steps as f32).cos());
        let (mut loss, mut grads) =
            data_parallel_grads(&model, b, &shares, |local, lo, hi, dev| {
                let ad = dev.clone();
                let sh = [hi - lo, shape[1], shape[2], shape[3], shape[4]];
                let xs = Tensor::<5>::from_data(
                    TensorData::new(x[lo * per_clip..hi * per_clip].to_vec(), sh),
                    &ad,
                );
                let (_, logits) = local.forward(xs);
                probe::loss(logits, &labels[lo..hi])
            });
        run::poison(out, step, &mut grads, &mut loss);
        let stats;
        (model, stats) = optim.step_with(model, &grads, lr, 1.0);
        guard.check(
            step,
            loss.is_finite() && stats.is_some(),
            loss,
            &progress,
            out,
            saved_step,
        )?;
        step += 1;
        progress.advance(step, b);

        let eval_now = step.is_multiple_of(tc.eval_every) || step == tc.steps;
        let heldout = eval_now.then(|| {
            let (per, all) = probe::accuracy(
                &model.valid(),
                pc,
                Split::HeldOut,
                tc.eval_clips,
                tc.eval_seed,
                64,
                device,
            );
            accuracy_map(per, all)
        });
        if step.is_multiple_of(tc.log_every) || eval_now {
            let m = Metrics {
                step,
                loss,
                lr,
                clips_per_s: progress.clips_per_s(),
                elapsed_s: progress.elapsed_s(),
                skipped_steps: guard.skipped,
                heldout_accuracy: heldout.clone(),
            };
            progress.log(
                &m,
                format!("loss {loss:.4} · {:.1} clips/s", m.clips_per_s),
                &format!(
                    "step {step}/{} loss {loss:.4} lr {lr:.2e} {:.1} clips/s",
                    tc.steps, m.clips_per_s
                ),
            )?;
        }
        if let Some(acc) = heldout {
            let line = acc
                .iter()
                .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            progress.say(&format!("step {step}: held-out accuracy {line}"));
            last_acc = acc;
        }
        if step.is_multiple_of(tc.checkpoint_every) || step == tc.steps {
            save(out, cfg, &model, &optim, step, &last_acc)?;
            saved_step = step;
            run::plot(out, "loss", "loss.png")?;
        }
    }
    progress.finish();
    if last_acc.is_empty() {
        let (per, all) = probe::accuracy(
            &model.valid(),
            pc,
            Split::HeldOut,
            tc.eval_clips,
            tc.eval_seed,
            64,
            device,
        );
        last_acc = accuracy_map(per, all);
    }
    Ok(last_acc)
}

fn save(
    out: &Path,
    cfg: &ProbeTrainConfig,
    model: &Probe,
    optim: &AdamW,
    step: u64,
    acc: &BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    let mut tensors = NamedTensors::new();
    module_tensors(model, "model.", &mut tensors);
    optim.state_tensors(&mut tensors);
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "flick-probe-state/1".into());
    meta.insert("config".into(), serde_json::to_string(&cfg.probe)?);
    meta.insert("step".into(), step.to_string());
    meta.insert("adam_t".into(), optim.t().to_string());
    write_safetensors(&state_path(out), &tensors, meta)?;
    run::keep_history(out, step, cfg.train.keep_checkpoints)?;
    let mut extra = BTreeMap::from([("step".to_string(), step.to_string())]);
    if !acc.is_empty() {
        extra.insert("heldout_accuracy".into(), serde_json::to_string(acc)?);
    }
    probe::save(&model_path(out), &model.valid(), &cfg.probe, &extra)?;
    Ok(())
}
