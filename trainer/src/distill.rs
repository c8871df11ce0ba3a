//! `flick distill`: the teacher → one-step generator pipeline.
//!
//! 1. `pairs`: the teacher's guided Euler solutions `(z, caption, x_teacher)`, cached in shards
//!    (`flick_core::distill::pairs`), resumable.
//! 2. `consistency`: deterministic distillation init — a student initialised from the teacher,
//!    trained with MSE so that `G(z, c) = z − v̂(z, c, 1)` matches `x_teacher` (blurry: the start,
//!    not the result).
//! 3. `apt`: adversarial post-training (Lin et al. 2025): the generator from the init against a
//!    discriminator initialised from the teacher (`flick_core::model::disc`), in stages (short
//!    clips, then full clips; each stage's generator starts from the previous stage's EMA and its
//!    discriminator is re-initialised from the teacher). Non-saturating loss with approximate R1
//!    by default; the relativistic pairing loss with approximate R2, and the WGAN-GP / exact-R1
//!    baselines (finite-difference penalties, see `flick_core::distill::losses`) for ablations.
//!
//! Everything random in a step is a function of `(seed, step)`, and the state files hold
//! weights, EMA, optimiser moments and the step, so every stage resumes where its last
//! checkpoint stood (`--resume`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::checkpoint::{
    NamedTensors, load_module, model_metadata, module_tensors, write_safetensors,
};
use flick_core::data::shapes::{ShapesConfig, ShapesSource, Split};
use flick_core::data::stack;
use flick_core::distill::losses::{GanLoss, approx_penalty, fd_gradient_penalty, fd_r1};
use flick_core::distill::{one_step, pairs};
use flick_core::flow::{noise, normal_vec, shift};
use flick_core::generate::Generator;
use flick_core::model::Backbone;
use flick_core::model::disc::Discriminator;
use flick_core::params::ema_update;
use flick_core::video::{Video, frame_grid};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::optim::{Replicas, RmsProp, data_parallel_grads, gate_of, place};
use crate::run;
use crate::train::step_rng;

// ---------------------------------------------------------------------------------------------
// Configuration

/// `flick distill` configuration (`configs/distill-*.toml`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    pub pairs: PairsConfig,
    pub consistency: ConsistencyConfig,
    pub apt: AptConfig,
    /// Distribution matching distillation (`flick distill dmd`).
    #[serde(default)]
    pub dmd: Option<crate::dmd::DmdConfig>,
    /// Prompts of the sample grids written during training (one clip each, seeds 0..).
    #[serde(default)]
    pub sample_prompts: Vec<String>,
}

/// Teacher ODE pairs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsConfig {
    /// Number of pairs.
    pub count: usize,
    /// Pairs per shard file.
    pub shard_size: usize,
    /// Teacher Euler steps and guidance.
    pub steps: usize,
    pub guidance: f32,
    /// Captions: the procedural training stream with this seed (item i's caption); noise: a
    /// function of (`noise_seed`, i).
    pub data_seed: u64,
    pub noise_seed: u64,
    /// Clips per teacher batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    8
}

/// Deterministic distillation (regression on the pairs).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f32,
    pub warmup_steps: u64,
    /// AdamW moments.
    pub beta1: f32,
    pub beta2: f32,
    pub grad_clip: f32,
    pub ema_decay: f32,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Consecutive non-finite steps after which training stops with an error.
    #[serde(default = "crate::run::default_max_bad_steps")]
    pub max_bad_steps: u64,
    /// Checkpoints kept: the current state and, above 1, the newest earlier ones in
    /// `checkpoints/` (hard links; the oldest deleted first).
    #[serde(default = "crate::run::default_keep_checkpoints")]
    pub keep_checkpoints: u64,
}

/// Adversarial post-training.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptConfig {
    /// `non_saturating` (APT), `relativistic` (APT2) or `wgan` (the review's baseline).
    pub loss: GanLoss,
    /// Penalty on real inputs: `approx` (APT's approximate R1), `fd` (exact R1, estimated by a
    /// finite-difference directional derivative) or `none` (the ablation). Not used with
    /// `loss = "wgan"`, which has its gradient penalty (`gp_lambda`) instead.
    pub r1: R1Kind,
    /// λ of approximate R1 (APT: 100); γ of exact R1 (`r1 = "fd"`).
    pub r1_lambda: f32,
    /// Approximate R2 on generated inputs (APT2: λ = 1000, σ = 0.1); 0 = off.
    #[serde(default)]
    pub r2_lambda: f32,
    #[serde(default = "default_r2_sigma")]
    pub r2_sigma: f32,
    /// WGAN gradient penalty weight (`loss = "wgan"`), at real/generated interpolates.
    #[serde(default = "default_gp")]
    pub gp_lambda: f32,
    /// Finite-difference step of the `fd` R1 and of the gradient penalty.
    #[serde(default = "default_fd_h")]
    pub fd_h: f32,
    /// RMSProp α (APT: 0.9), for both networks.
    pub rms_alpha: f32,
    /// Generator EMA (APT: 0.995); the EMA is what gets saved.
    pub ema_decay: f32,
    /// Heads of the discriminator's query blocks.
    pub d_heads: usize,
    /// Global gradient-norm clip for both networks (APT: none = 0).
    #[serde(default)]
    pub grad_clip: f32,
    /// Real clips: the procedural training stream with this seed.
    pub data_seed: u64,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Sample grid every this many steps (0 = only at stage ends).
    #[serde(default)]
    pub sample_every: u64,
    /// Consecutive non-finite steps (of either network) after which training stops with an error.
    #[serde(default = "crate::run::default_max_bad_steps")]
    pub max_bad_steps: u64,
    /// Checkpoints kept: the current state and, above 1, the newest earlier ones in
    /// `checkpoints/` (hard links; the oldest deleted first).
    #[serde(default = "crate::run::default_keep_checkpoints")]
    pub keep_checkpoints: u64,
    pub stages: Vec<AptStage>,
}

fn default_r2_sigma() -> f32 {
    0.1
}
fn default_gp() -> f32 {
    10.0
}
fn default_fd_h() -> f32 {
    0.01
}

/// Penalty on real inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum R1Kind {
    Approx,
    Fd,
    None,
}

/// One APT stage (APT: images, then clips).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptStage {
    pub name: String,
    /// Frames of the stage's clips (a multiple of the temporal patch; the shortest clip the
    /// model takes plays APT's image stage).
    pub frames: usize,
    /// Updates of each network.
    pub steps: u64,
    pub batch_size: usize,
    pub lr_g: f32,
    pub lr_d: f32,
    /// Shift of the discriminator's noise level `t ∼ shift(U(0, 1), s)` (APT: 1 images, 12 clips).
    pub d_shift: f32,
    /// σ of approximate R1 (APT: 0.01 images, 0.1 clips).
    pub r1_sigma: f32,
    /// Discriminator-only updates at the start of the stage (the generator waits; 0 = APT).
    /// A discriminator freshly initialised from the teacher sits at chance for its first ~100
    /// updates at this scale, and a generator trained against it follows noise.
    #[serde(default)]
    pub d_warmup_steps: u64,
}

impl DistillConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid distill config", path.display()))?;
        let p = &cfg.pairs;
        anyhow::ensure!(
            p.count > 0 && p.shard_size > 0 && p.steps > 0 && p.batch > 0,
            "pairs: count, shard_size, steps and batch must be ≥ 1"
        );
        let c = &cfg.consistency;
        anyhow::ensure!(
            c.steps > 0 && c.batch_size > 0 && c.log_every > 0 && c.checkpoint_every > 0,
            "consistency: steps, batch_size, log_every, checkpoint_every must be ≥ 1"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&c.ema_decay),
            "consistency.ema_decay must be in [0, 1)"
        );
        let a = &cfg.apt;
        anyhow::ensure!(!a.stages.is_empty(), "apt.stages: at least one stage");
        anyhow::ensure!(
            (0.0..1.0).contains(&a.ema_decay) && (0.0..1.0).contains(&a.rms_alpha),
            "apt.ema_decay and apt.rms_alpha must be in [0, 1)"
        );
        anyhow::ensure!(
            a.log_every > 0 && a.checkpoint_every > 0,
            "apt.log_every and apt.checkpoint_every must be ≥ 1"
        );
        anyhow::ensure!(a.fd_h > 0.0, "apt.fd_h must be > 0");
        for s in &a.stages {
            anyhow::ensure!(
                s.steps > 0 && s.batch_size > 0 && s.frames > 0,
                "apt stage {:?}: steps, batch_size and frames must be ≥ 1",
                s.name
            );
            anyhow::ensure!(
                s.d_shift > 0.0 && s.r1_sigma >= 0.0,
                "apt stage {:?}: d_shift must be > 0 and r1_sigma ≥ 0",
                s.name
            );
            anyhow::ensure!(
                s.d_warmup_steps < s.steps,
                "apt stage {:?}: d_warmup_steps must be below steps",
                s.name
            );
        }
        Ok(cfg)
    }
}

/// Metadata of a one-step generator checkpoint.
fn generator_extra(teacher: &Generator, method: &str, step: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("method".to_string(), method.to_string()),
        ("step".to_string(), step.to_string()),
        ("steps".to_string(), "1".to_string()),
        ("guidance".to_string(), "1".to_string()),
        ("shift".to_string(), teacher.shift.to_string()),
    ])
}

pub(crate) fn save_generator(
    path: &Path,
    model: &Backbone,
    teacher: &Generator,
    method: &str,
    step: u64,
) -> anyhow::Result<()> {
    let mut tensors = NamedTensors::new();
    module_tensors(model, "", &mut tensors);
    write_safetensors(
        path,
        &tensors,
        model_metadata(
            "generator",
            &teacher.info.config,
            &generator_extra(teacher, method, step),
        ),
    )?;
    Ok(())
}

/// One-step samples of `model` for the config's prompts (seeds 0..), as a frame grid.
pub(crate) fn write_samples(
    dir: &Path,
    name: &str,
    model: &Backbone,
    teacher: &Generator,
    prompts: &[String],
    frames: usize,
    device: &Device,
) -> anyhow::Result<()> {
    if prompts.is_empty() {
        return Ok(());
    }
    let c = &teacher.info.config;
    let z: Vec<f32> = (0..prompts.len() as u64)
        .flat_map(|s| sample_noise(s, 3 * frames * c.height * c.width))
        .collect();
    let z = Tensor::<5>::from_data(
        TensorData::new(z, [prompts.len(), 3, frames, c.height, c.width]),
        device,
    );
    let text = model.encode_text(prompts, device);
    let clips = teacher.to_clips(one_step(model, z, &text));
    let videos: Vec<Video> = clips.iter().map(Video::from_clip).collect();
    std::fs::create_dir_all(dir)?;
    frame_grid(&videos, 3).save(dir.join(format!("{name}.png")))?;
    Ok(())
}

/// Items `lo..hi` of a batch held as flat data, `[hi − lo, shape[1..]]`, on `device`.
pub(crate) fn rows(
    v: &[f32],
    lo: usize,
    hi: usize,
    shape: [usize; 5],
    device: &Device,
) -> Tensor<5> {
    let per: usize = shape[1..].iter().product();
    Tensor::<5>::from_data(
        TensorData::new(
            v[lo * per..hi * per].to_vec(),
            [hi - lo, shape[1], shape[2], shape[3], shape[4]],
        ),
        device,
    )
}

/// Entries `lo..hi` of per-item scalars (times, mixing weights) as `[hi − lo]`.
pub(crate) fn entries(v: &[f32], lo: usize, hi: usize, device: &Device) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(v[lo..hi].to_vec(), [hi - lo]), device)
}

fn sample_noise(seed: u64, n: usize) -> Vec<f32> {
    normal_vec(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), n)
}

// ---------------------------------------------------------------------------------------------
// 1. Pairs

/// Make (or complete) the pairs cache in `out`. Returns the number of pairs in the cache.
/// The teacher to distil. A nested U-Net generates through all its resolutions at once; the
/// one-step generator, its pair cache and the discriminator work on single-resolution backbones
/// (DiT, U-Net) for now, so it is refused with a message rather than distilled wrongly.
/// A generator's start (`--init`) as the trained network (on `ad`) and its EMA (on `device`);
/// it must have the teacher's model config.
pub(crate) fn load_init(
    init: &Path,
    teacher_config: &flick_core::model::ModelConfig,
    ad: &Device,
    device: &Device,
) -> anyhow::Result<(Backbone, Backbone)> {
    let (g, info) = flick_core::checkpoint::load_model(init, ad)
        .with_context(|| format!("--init {}", init.display()))?;
    anyhow::ensure!(
        &info.config == teacher_config,
        "--init {} has another model config than the teacher",
        init.display()
    );
    let (g_ema, _) = flick_core::checkpoint::load_model(init, device)?;
    Ok((g, g_ema))
}

pub(crate) fn load_teacher(path: &Path, device: &Device) -> anyhow::Result<Generator> {
    let teacher = Generator::load(path, device)?;
    if teacher.model.levels() > 1 {
        bail!(
            "{}: distilling a nested U-Net teacher (model kind \"nested\") is not supported yet; distil a \"dit\" or \"unet\" teacher",
            path.display()
        );
    }
    Ok(teacher)
}

pub fn make_pairs(
    cfg: &PairsConfig,
    teacher_path: &Path,
    out: &Path,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<usize> {
    let teacher = load_teacher(teacher_path, device)?;
    anyhow::ensure!(
        teacher.info.kind == "teacher",
        "{} is a {:?} checkpoint; pairs are made with a multi-step teacher",
        teacher_path.display(),
        teacher.info.kind
    );
    let mc = &teacher.info.config;
    let source = ShapesSource::new(
        ShapesConfig {
            frames: mc.frames,
            height: mc.height,
            width: mc.width,
            two_object_prob: 0.25,
        },
        cfg.data_seed,
    )?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let meta = BTreeMap::from([
        ("teacher".to_string(), teacher_path.display().to_string()),
        ("steps".to_string(), cfg.steps.to_string()),
        ("guidance".to_string(), cfg.guidance.to_string()),
        ("shift".to_string(), teacher.shift.to_string()),
        ("data_seed".to_string(), cfg.data_seed.to_string()),
        ("noise_seed".to_string(), cfg.noise_seed.to_string()),
        ("shard_size".to_string(), cfg.shard_size.to_string()),
    ]);
    let shards = cfg.count.div_ceil(cfg.shard_size);
    let bar = run::bar(quiet, cfg.count as u64, 0);
    bar.set_message("teacher pairs");
    let started = Instant::now();
    let mut made = 0usize;
    for k in 0..shards {
        let lo = k * cfg.shard_size;
        let hi = ((k + 1) * cfg.shard_size).min(cfg.count);
        let path = pairs::shard_path(out, k);
        if path.exists() {
            // Resume: an existing shard must come from the same settings.
            let s = pairs::read_shard(&path)?;
            for key in ["steps", "guidance", "data_seed", "noise_seed", "shard_size"] {
                if s.meta.get(key) != meta.get(key) {
                    bail!(
                        "{} was made with {key} = {:?}, this run asks for {:?}: use another --out or the same settings",
                        path.display(),
                        s.meta.get(key),
                        meta.get(key)
                    );
                }
            }
            if s.len() == hi - lo {
                bar.inc(s.len() as u64);
                continue;
            }
        }
        let mut z_all = Vec::new();
        let mut x_all = Vec::new();
        let mut captions = Vec::new();
        for blo in (lo..hi).step_by(cfg.batch) {
            let bhi = (blo + cfg.batch).min(hi);
            let prompts: Vec<String> = (blo..bhi)
                .map(|i| source.sample(Split::Train, i as u64).caption)
                .collect();
            let z: Vec<f32> = (blo..bhi)
                .flat_map(|i| {
                    teacher.noise(
                        cfg.noise_seed
                            .wrapping_mul(1_000_003)
                            .wrapping_add(i as u64),
                    )
                })
                .collect();
            let x = teacher.sample(&prompts, z.clone(), cfg.steps, cfg.guidance, |_, _| {})?;
            let x: Vec<f32> = x
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::ensure!(
                x.iter().all(|v| v.is_finite()),
                "the teacher produced non-finite values for pairs {blo}..{bhi}"
            );
            z_all.extend(z);
            x_all.extend(x);
            captions.extend(prompts);
            bar.inc((bhi - blo) as u64);
            made += bhi - blo;
        }
        let shard = pairs::Shard {
            shape: [hi - lo, 3, mc.frames, mc.height, mc.width],
            z: z_all,
            x: x_all,
            captions,
            meta: meta.clone(),
        };
        pairs::write_shard(&path, &shard)?;
        run::log_line(
            quiet,
            &format!(
                "pairs {hi}/{} ({:.2} s per pair)",
                cfg.count,
                started.elapsed().as_secs_f32() / made.max(1) as f32
            ),
        );
    }
    bar.finish();
    Ok(pairs::read_all(out)?.len())
}

// ---------------------------------------------------------------------------------------------
// 2. Consistency (deterministic distillation init)

#[derive(Serialize)]
struct ConsistencyMetrics {
    step: u64,
    loss: f32,
    lr: f32,
    grad_norm: f32,
    clips_per_s: f32,
    elapsed_s: f32,
    /// Updates skipped so far for a non-finite loss or gradient (all networks).
    skipped_steps: u64,
}

/// Train the deterministic init. Writes `<out>/generator.safetensors` (the EMA) and returns it.
#[allow(clippy::too_many_arguments)]
pub fn train_consistency(
    cfg: &DistillConfig,
    teacher_path: &Path,
    pairs_dir: &Path,
    out: &Path,
    resume: bool,
    device: &Device,
    replicas: &Replicas,
    stop_at: Option<u64>,
    quiet: bool,
) -> anyhow::Result<Backbone> {
    let cc = &cfg.consistency;
    let teacher = load_teacher(teacher_path, device)?;
    let data = pairs::read_all(pairs_dir)?;
    let mc = &teacher.info.config;
    anyhow::ensure!(
        data.shape[1..] == [3, mc.frames, mc.height, mc.width],
        "pairs in {} have clip shape {:?}, the teacher makes {:?}",
        pairs_dir.display(),
        &data.shape[1..],
        [3, mc.frames, mc.height, mc.width]
    );
    let saved = run::open(out, resume)?;
    let ad = device.clone().autodiff();
    let shares = replicas.shares(&ad);
    let state = run::state_path(out);
    let mut optim = crate::optim::AdamW::new(cc.beta1, cc.beta2, 1e-8, 0.0);
    let (mut model, mut ema, mut step) = if let Some(saved) = saved {
        let model = load_module(mc.init(&ad), &saved.tensors, "model.", &ad)?;
        let ema = load_module(mc.init(device), &saved.tensors, "ema.", device)?;
        optim.load_state(&saved.tensors, saved.field("adam_t")?.parse()?, device);
        let step = saved.step()?;
        eprintln!("resumed from {} at step {step}", state.display());
        (model, ema, step)
    } else {
        let (model, _) = flick_core::checkpoint::load_model(teacher_path, &ad)?;
        (model, teacher.model.clone(), 0)
    };
    eprintln!(
        "consistency distillation: {} pairs from {}, student initialised from {}",
        data.len(),
        pairs_dir.display(),
        teacher_path.display()
    );
    let n = data.len();
    anyhow::ensure!(
        n > 0,
        "{} holds no pairs (its shards are empty); make them with `flick distill pairs`",
        pairs_dir.display()
    );
    let per = data.clip_len();
    let last = stop_at.map_or(cc.steps, |s| s.min(cc.steps));
    let mut progress = run::Progress::start(out, cc.steps, step, quiet)?;
    let mut guard = run::Guard::new("consistency", "a lower consistency.lr", cc.max_bad_steps, 0);
    let mut saved_step = step;
    while step < last {
        // Epoch-wise shuffled order, a function of (seed, epoch).
        let b = cc.batch_size;
        let idx: Vec<usize> = (0..b)
            .map(|j| {
                let k = step as usize * b + j;
                let (epoch, pos) = (k / n, k % n);
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut step_rng(cc.seed, epoch as u64));
                order[pos]
            })
            .collect();
        let z: Vec<f32> = idx
            .iter()
            .flat_map(|&i| data.z[i * per..(i + 1) * per].iter().copied())
            .collect();
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| data.x[i * per..(i + 1) * per].iter().copied())
            .collect();
        let prompts: Vec<String> = idx.iter().map(|&i| data.captions[i].clone()).collect();
        let shape = [
            b,
            data.shape[1],
            data.shape[2],
            data.shape[3],
            data.shape[4],
        ];
        let lr = cc.lr * ((step + 1) as f32 / cc.warmup_steps.max(1) as f32).min(1.0);
        let (mut loss, mut grads) =
            data_parallel_grads(&model, b, &shares, |local, lo, hi, dev| {
                let ad = dev.clone();
                let text = local.encode_text(&prompts[lo..hi], &ad);
                (one_step(local, rows(&z, lo, hi, shape, &ad), &text)
                    - rows(&x, lo, hi, shape, &ad))
                .powi_scalar(2)
                .mean()
            });
        run::poison(out, step, &mut grads, &mut loss);
        let decay = run::ema_decay(cc.ema_decay, step);
        let (m, e, update) = optim.update(
            model,
            Some((ema, decay)),
            &grads,
            lr,
            cc.grad_clip,
            gate_of(loss, device),
        );
        let stats = update.read();
        (model, ema) = (m, e.expect("the EMA comes back"));
        guard.check(
            step,
            loss.is_finite() && stats.is_some(),
            loss,
            &progress,
            out,
            saved_step,
        )?;
        let grad_norm = stats.map_or(f32::NAN, |s| s.grad_norm);
        step += 1;
        progress.advance(step, b);
        if step % cc.log_every == 0 || step == last {
            let m = ConsistencyMetrics {
                step,
                loss,
                lr,
                grad_norm,
                clips_per_s: progress.clips_per_s(),
                elapsed_s: progress.elapsed_s(),
                skipped_steps: guard.skipped,
            };
            progress.log(
                &m,
                format!("mse {loss:.4} · {:.1} clips/s", m.clips_per_s),
                &format!(
                    "step {step}/{} mse {loss:.4} lr {lr:.2e} grad-norm {grad_norm:.3} {:.1} clips/s",
                    cc.steps, m.clips_per_s
                ),
            )?;
        }
        if step % cc.checkpoint_every == 0 || step == last {
            let mut tensors = NamedTensors::new();
            module_tensors(&model, "model.", &mut tensors);
            module_tensors(&ema, "ema.", &mut tensors);
            optim.state_tensors(&mut tensors);
            let meta = BTreeMap::from([
                (
                    "format".to_string(),
                    "flick-consistency-state/1".to_string(),
                ),
                ("step".to_string(), step.to_string()),
                ("adam_t".to_string(), optim.t().to_string()),
            ]);
            write_safetensors(&state, &tensors, meta)?;
            run::keep_history(out, step, cc.keep_checkpoints)?;
            saved_step = step;
            save_generator(
                &out.join("generator.safetensors"),
                &ema,
                &teacher,
                "consistency",
                step,
            )?;
            run::plot(out, "loss", "loss.png")?;
        }
    }
    progress.finish();
    write_samples(
        &out.join("samples"),
        &format!("step_{step:06}"),
        &ema,
        &teacher,
        &cfg.sample_prompts,
        mc.frames,
        device,
    )?;
    Ok(ema)
}

// ---------------------------------------------------------------------------------------------
// 3. APT

#[derive(Serialize)]
struct AptMetrics {
    step: u64,
    stage: String,
    d_loss: f32,
    /// None while the discriminator warms up (no generator step).
    #[serde(skip_serializing_if = "Option::is_none")]
    g_loss: Option<f32>,
    /// The real-input penalty (aR1 / R1 / gradient penalty), as added to the D loss.
    penalty: f32,
    /// Mean discriminator logits on real and generated clips (D step), and σ of them.
    logit_real: f32,
    logit_fake: f32,
    p_real: f32,
    p_fake: f32,
    d_grad_norm: f32,
    g_grad_norm: f32,
    clips_per_s: f32,
    elapsed_s: f32,
    /// Updates skipped so far for a non-finite loss or gradient (all networks).
    skipped_steps: u64,
}

/// Options of `flick distill apt`.
pub struct AptArgs<'a> {
    pub cfg: &'a DistillConfig,
    pub teacher: &'a Path,
    /// The deterministic init (`flick distill consistency`'s generator.safetensors).
    pub init: &'a Path,
    pub out: &'a Path,
    pub resume: bool,
    pub device: Device,
    /// Where the batch's shares run (threads on `device`, or devices led by `device`).
    pub replicas: Replicas,
    pub stop_at: Option<u64>,
    pub quiet: bool,
}

/// Which stage a global step belongs to, and the step at which that stage started.
fn stage_of(stages: &[AptStage], step: u64) -> (usize, u64) {
    let mut start = 0;
    for (i, s) in stages.iter().enumerate() {
        if step < start + s.steps {
            return (i, start);
        }
        start += s.steps;
    }
    (stages.len(), start)
}

/// Adversarial post-training. Writes `<out>/generator.safetensors` (the generator EMA) at every
/// checkpoint and `<out>/generator-<stage>.safetensors` at each stage's end; returns the EMA.
pub fn train_apt(args: AptArgs<'_>) -> anyhow::Result<Backbone> {
    let AptArgs {
        cfg,
        teacher: teacher_path,
        init,
        out,
        resume,
        device,
        replicas,
        stop_at,
        quiet,
    } = args;
    let ac = &cfg.apt;
    let teacher = load_teacher(teacher_path, &device)?;
    anyhow::ensure!(
        teacher.info.kind == "teacher",
        "--teacher {} is a {:?} checkpoint; the discriminator starts from the multi-step teacher",
        teacher_path.display(),
        teacher.info.kind
    );
    let mc = teacher.info.config.clone();
    for s in &ac.stages {
        anyhow::ensure!(
            s.frames % mc.patch[0] == 0,
            "apt stage {:?}: frames {} must be a multiple of the temporal patch {}",
            s.name,
            s.frames,
            mc.patch[0]
        );
    }
    let saved = run::open(out, resume)?;
    let ad = device.clone().autodiff();
    let shares = replicas.shares(&ad);
    let state = run::state_path(out);
    let total: u64 = ac.stages.iter().map(|s| s.steps).sum();
    let fresh_disc = || -> anyhow::Result<Discriminator> {
        let (backbone, _) = flick_core::checkpoint::load_model(teacher_path, &ad)?;
        Ok(run::seeded(&device, ac.seed, || {
            Discriminator::new(backbone, ac.d_heads, &ad)
        }))
    };

    let mut opt_g = RmsProp::new(ac.rms_alpha, 1e-8);
    let mut opt_d = RmsProp::new(ac.rms_alpha, 1e-8);
    let (mut g, mut g_ema, mut d, mut step) = if let Some(saved) = saved {
        let tensors = &saved.tensors;
        let g = load_module(mc.init(&ad), tensors, "g.", &ad)?;
        let g_ema = load_module(mc.init(&device), tensors, "g_ema.", &device)?;
        let d = load_module(fresh_disc()?, tensors, "d.", &ad)?;
        opt_g.load_state("opt_g.", tensors, &device);
        opt_d.load_state("opt_d.", tensors, &device);
        let step = saved.step()?;
        let objective = objective_tag(ac.loss, ac.r1);
        if let Some(saved) = saved.meta.get("objective").filter(|s| **s != objective) {
            bail!(
                "{} was trained with {saved}, this invocation asks for {objective}: resume with the same config and --loss/--r1",
                state.display()
            );
        }
        eprintln!("resumed from {} at step {step}", state.display());
        (g, g_ema, d, step)
    } else {
        let (g, g_ema) = load_init(init, &mc, &ad, &device)?;
        (g, g_ema, fresh_disc()?, 0)
    };
    eprintln!(
        "APT: loss {:?}, real-input penalty {:?} (λ {}), R2 λ {}, discriminator taps {:?} of {} blocks, {} parameters; stages {}",
        ac.loss,
        ac.r1,
        ac.r1_lambda,
        ac.r2_lambda,
        d.taps,
        mc.depth,
        flick_core::params::count(&d),
        ac.stages
            .iter()
            .map(|s| format!(
                "{} ({} frames, {} steps, batch {})",
                s.name, s.frames, s.steps, s.batch_size
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let sources: Vec<ShapesSource> = ac
        .stages
        .iter()
        .map(|s| {
            ShapesSource::new(
                ShapesConfig {
                    frames: s.frames,
                    height: mc.height,
                    width: mc.width,
                    two_object_prob: 0.25,
                },
                ac.data_seed,
            )
        })
        .collect::<Result<_, _>>()?;
    let last = stop_at.map_or(total, |s| s.min(total));
    let mut progress = run::Progress::start(out, total, step, quiet)?;
    let mut d_guard = run::Guard::new(
        "discriminator",
        "a lower lr_d for the stage",
        ac.max_bad_steps,
        0,
    );
    let mut g_guard = run::Guard::new(
        "generator",
        "a lower lr_g for the stage",
        ac.max_bad_steps,
        0,
    );
    let mut saved_step = step;
    let save = |g: &Backbone,
                g_ema: &Backbone,
                d: &Discriminator,
                opt_g: &RmsProp,
                opt_d: &RmsProp,
                step: u64|
     -> anyhow::Result<()> {
        let mut tensors = NamedTensors::new();
        module_tensors(g, "g.", &mut tensors);
        module_tensors(g_ema, "g_ema.", &mut tensors);
        module_tensors(d, "d.", &mut tensors);
        opt_g.state_tensors("opt_g.", &mut tensors);
        opt_d.state_tensors("opt_d.", &mut tensors);
        let meta = BTreeMap::from([
            ("format".to_string(), "flick-apt-state/1".to_string()),
            ("step".to_string(), step.to_string()),
            ("objective".to_string(), objective_tag(ac.loss, ac.r1)),
        ]);
        write_safetensors(&state, &tensors, meta)?;
        run::keep_history(out, step, ac.keep_checkpoints)?;
        save_generator(
            &out.join("generator.safetensors"),
            g_ema,
            &teacher,
            &format!("apt-{:?}", ac.loss).to_lowercase(),
            step,
        )?;
        Ok(())
    };

    while step < last {
        let (si, stage_start) = stage_of(&ac.stages, step);
        let stage = &ac.stages[si];
        if step == stage_start && si > 0 {
            // New stage: the generator continues from the previous stage's EMA, the
            // discriminator starts again from the teacher, both optimisers afresh.
            write_samples(
                &out.join("samples"),
                &format!("{}_end", ac.stages[si - 1].name),
                &g_ema,
                &teacher,
                &cfg.sample_prompts,
                ac.stages[si - 1].frames,
                &device,
            )?;
            save_generator(
                &out.join(format!("generator-{}.safetensors", ac.stages[si - 1].name)),
                &g_ema,
                &teacher,
                "apt",
                step,
            )?;
            let mut tensors = NamedTensors::new();
            module_tensors(&g_ema, "", &mut tensors);
            g = load_module(mc.init(&ad), &tensors, "", &ad)?;
            d = fresh_disc()?;
            opt_g = RmsProp::new(ac.rms_alpha, 1e-8);
            opt_d = RmsProp::new(ac.rms_alpha, 1e-8);
            eprintln!(
                "stage {:?} starts at step {step}: generator from the {:?} EMA, discriminator re-initialised from the teacher",
                stage.name,
                ac.stages[si - 1].name
            );
        }
        let b = stage.batch_size;
        let frames = stage.frames;
        let per = 3 * frames * mc.height * mc.width;
        let mut rng = step_rng(ac.seed, step);
        let samples: Vec<_> = (0..b)
            .map(|j| sources[si].get_train(step * b as u64 + j as u64))
            .collect();
        let prompts: Vec<String> = samples.iter().map(|s| s.1.clone()).collect();
        let (real, shape) = stack(&samples.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
        let draw = |rng: &mut rand_chacha::ChaCha8Rng| normal_vec(rng, b * per);
        let z_d = draw(&mut rng);
        let eps_d = draw(&mut rng);
        let pert = draw(&mut rng);
        let pert2 = draw(&mut rng);
        let t_d: Vec<f32> = (0..b)
            .map(|_| shift(rng.random::<f32>(), stage.d_shift).clamp(1e-3, 1.0))
            .collect();
        let mix: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
        let z_g = draw(&mut rng);
        let eps_g = draw(&mut rng);
        let t_g: Vec<f32> = (0..b)
            .map(|_| shift(rng.random::<f32>(), stage.d_shift).clamp(1e-3, 1.0))
            .collect();

        // ---- Discriminator step
        let g_frozen = g.clone().no_grad();
        let logs = std::sync::Mutex::new((0f32, 0f32, 0f32));
        let (mut d_loss, mut d_grads) =
            data_parallel_grads(&d, b, &shares, |local, lo, hi, dev| {
                let ad = dev.clone();
                let g_frozen = place(&g_frozen, &ad);
                let n = hi - lo;
                let ten = |v: &[f32]| rows(v, lo, hi, shape, &ad);
                let t = entries(&t_d, lo, hi, &ad);
                let g_text = g_frozen.encode_text(&prompts[lo..hi], &ad);
                let fake = one_step(&g_frozen, ten(&z_d), &g_text).detach();
                let real = ten(&real);
                let eps = ten(&eps_d);
                let text = local.encode_text(&prompts[lo..hi], &ad);
                let disc = |x: Tensor<5>| {
                    local.forward(noise(x, eps.clone(), t.clone()).0, t.clone(), &text)
                };
                let l_real = disc(real.clone());
                let l_fake = disc(fake.clone());
                let mut loss = ac.loss.d_loss(l_real.clone(), l_fake.clone());
                let penalty = match (ac.loss, ac.r1) {
                    (GanLoss::Wgan, _) => {
                        let a = entries(&mix, lo, hi, &ad).reshape([n, 1, 1, 1, 1]);
                        let xhat = real.clone() * a.clone() + fake.clone() * (a.neg() + 1.0);
                        fd_gradient_penalty(
                            disc(xhat.clone()),
                            disc(xhat + ten(&pert) * ac.fd_h),
                            ac.fd_h,
                            ac.gp_lambda,
                        )
                    }
                    (_, R1Kind::Approx) => approx_penalty(
                        l_real.clone(),
                        disc(real.clone() + ten(&pert) * stage.r1_sigma),
                        ac.r1_lambda,
                    ),
                    (_, R1Kind::Fd) => fd_r1(
                        l_real.clone(),
                        disc(real.clone() + ten(&pert) * ac.fd_h),
                        ac.fd_h,
                        ac.r1_lambda,
                    ),
                    (_, R1Kind::None) => Tensor::<1>::zeros([1], &ad),
                };
                loss = loss + penalty.clone();
                if ac.r2_lambda > 0.0 {
                    loss = loss
                        + approx_penalty(
                            l_fake.clone(),
                            disc(fake + ten(&pert2) * ac.r2_sigma),
                            ac.r2_lambda,
                        );
                }
                let w = n as f32 / b as f32;
                let (pr, lr_, lf): (f32, f32, f32) = (
                    penalty.detach().into_scalar(),
                    l_real.detach().mean().into_scalar(),
                    l_fake.detach().mean().into_scalar(),
                );
                let mut acc = logs.lock().unwrap();
                acc.0 += pr * w;
                acc.1 += lr_ * w;
                acc.2 += lf * w;
                loss
            });
        let (penalty, logit_real, logit_fake) = *logs.lock().unwrap();
        let clip = ac.grad_clip;
        run::poison(out, step, &mut d_grads, &mut d_loss);
        let (d_new, d_stats) = opt_d.step_with(d, &d_grads, stage.lr_d, clip);
        d = d_new;
        d_guard.check(
            step,
            d_loss.is_finite() && d_stats.is_some(),
            d_loss,
            &progress,
            out,
            saved_step,
        )?;

        // ---- Generator step (none while the stage's discriminator warms up)
        let warming = step - stage_start < stage.d_warmup_steps;
        let d_frozen = d.clone().no_grad();
        let (g_loss, g_stats) = if warming {
            (None, None)
        } else {
            let (mut g_loss, mut g_grads) =
                data_parallel_grads(&g, b, &shares, |local, lo, hi, dev| {
                    let ad = dev.clone();
                    let d_frozen = place(&d_frozen, &ad);
                    let ten = |v: &[f32]| rows(v, lo, hi, shape, &ad);
                    let t = entries(&t_g, lo, hi, &ad);
                    let g_text = local.encode_text(&prompts[lo..hi], &ad);
                    let fake = one_step(local, ten(&z_g), &g_text);
                    let eps = ten(&eps_g);
                    let text = d_frozen.encode_text(&prompts[lo..hi], &ad);
                    let l_fake =
                        d_frozen.forward(noise(fake, eps.clone(), t.clone()).0, t.clone(), &text);
                    let l_real = (ac.loss == GanLoss::Relativistic).then(|| {
                        d_frozen
                            .forward(noise(ten(&real), eps, t.clone()).0, t, &text)
                            .detach()
                    });
                    ac.loss.g_loss(l_fake, l_real)
                });
            run::poison(out, step, &mut g_grads, &mut g_loss);
            let (g_new, g_stats) = opt_g.step_with(g, &g_grads, stage.lr_g, clip);
            g = g_new;
            let taken = g_loss.is_finite() && g_stats.is_some();
            g_guard.check(step, taken, g_loss, &progress, out, saved_step)?;
            if taken {
                let k = step - stage_start - stage.d_warmup_steps;
                g_ema = ema_update(g_ema, &g, run::ema_decay(ac.ema_decay, k));
            }
            (Some(g_loss), g_stats)
        };
        step += 1;
        progress.advance(step, b);

        if step % ac.log_every == 0 || step == last {
            let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
            let m = AptMetrics {
                step,
                stage: stage.name.clone(),
                d_loss,
                g_loss,
                penalty,
                logit_real,
                logit_fake,
                p_real: sig(logit_real),
                p_fake: sig(logit_fake),
                d_grad_norm: d_stats.map_or(f32::NAN, |s| s.grad_norm),
                g_grad_norm: g_stats.map_or(f32::NAN, |s| s.grad_norm),
                clips_per_s: progress.clips_per_s(),
                elapsed_s: progress.elapsed_s(),
                skipped_steps: d_guard.skipped + g_guard.skipped,
            };
            let g_msg = g_loss.map_or("(D warm-up)".to_string(), |l| format!("{l:.3}"));
            let msg = format!(
                "{} D {d_loss:.3} G {g_msg} pen {penalty:.3} logits {logit_real:+.2}/{logit_fake:+.2} · {:.1} clips/s",
                stage.name, m.clips_per_s
            );
            let line = format!("step {step}/{total} {msg}");
            progress.log(&m, msg, &line)?;
        }
        if step % ac.checkpoint_every == 0 || step == last {
            save(&g, &g_ema, &d, &opt_g, &opt_d, step)?;
            saved_step = step;
            for (field, png) in [
                ("d_loss", "d_loss.png"),
                ("g_loss", "g_loss.png"),
                ("penalty", "penalty.png"),
                ("p_real", "p_real.png"),
                ("p_fake", "p_fake.png"),
            ] {
                run::plot(out, field, png)?;
            }
        }
        if ac.sample_every > 0 && step % ac.sample_every == 0 {
            write_samples(
                &out.join("samples"),
                &format!("step_{step:06}"),
                &g_ema,
                &teacher,
                &cfg.sample_prompts,
                stage.frames,
                &device,
            )?;
        }
    }
    progress.finish();
    if step == total {
        let lastst = ac.stages.last().expect("at least one stage");
        save_generator(
            &out.join(format!("generator-{}.safetensors", lastst.name)),
            &g_ema,
            &teacher,
            "apt",
            step,
        )?;
        write_samples(
            &out.join("samples"),
            &format!("{}_end", lastst.name),
            &g_ema,
            &teacher,
            &cfg.sample_prompts,
            mc.frames,
            &device,
        )?;
    }
    Ok(g_ema)
}

/// The adversarial objective a run was trained with, recorded in its state.
fn objective_tag(loss: GanLoss, r1: R1Kind) -> String {
    format!("loss {loss:?}, r1 {r1:?}")
}

trait TrainSample {
    fn get_train(&self, index: u64) -> (flick_core::data::Clip, String);
}

impl TrainSample for ShapesSource {
    fn get_train(&self, index: u64) -> (flick_core::data::Clip, String) {
        let s = self.sample(Split::Train, index);
        (s.clip, s.caption)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn stages_follow_each_other() {
        let st = |steps| AptStage {
            name: "s".into(),
            frames: 2,
            steps,
            batch_size: 1,
            lr_g: 0.0,
            lr_d: 0.0,
            d_shift: 1.0,
            r1_sigma: 0.01,
            d_warmup_steps: 0,
        };
        let stages = vec![st(3), st(2)];
        assert_eq!(stage_of(&stages, 0), (0, 0));
        assert_eq!(stage_of(&stages, 2), (0, 0));
        assert_eq!(stage_of(&stages, 3), (1, 3));
        assert_eq!(stage_of(&stages, 4), (1, 3));
        assert_eq!(stage_of(&stages, 5), (2, 5));
    }

    #[test]
    fn configs_in_the_repo_load() {
        for name in ["distill-tiny.toml", "distill-small.toml"] {
            DistillConfig::load(
                &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../configs")
                    .join(name),
            )
            .unwrap();
        }
    }
}
