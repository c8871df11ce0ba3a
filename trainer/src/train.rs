//! `flick train-teacher`: flow-matching training of the video teacher, resumable.
//!
//! Everything random in a step (batch contents, caption dropout, times, noise) is a function of
//! `(seed, step)`, and the state file holds weights, EMA, AdamW moments and the step, so a run
//! killed at any point and restarted with `--resume` continues exactly where its last
//! checkpoint stood.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::checkpoint::{
    NamedTensors, load_module, model_metadata, module_tensors, read_safetensors, write_safetensors,
};
use flick_core::data::{
    ClipSource,
    folder::FolderDataset,
    shapes::{ShapesConfig, ShapesSource},
    stack,
};
use flick_core::flow::normal_vec;
use flick_core::generate::Generator;
use flick_core::model::Backbone;
use flick_core::video::{Video, frame_grid};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::TeacherConfig;
use crate::optim::{AdamW, Replicas, data_parallel_grads_unread};
use crate::run;

/// Options of one training invocation.
pub struct TrainArgs {
    pub config: TeacherConfig,
    pub config_path: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    pub device: Device,
    /// Stop after this step even if the config asks for more (for tests and staged runs).
    pub stop_at: Option<u64>,
    pub quiet: bool,
    /// Where the batch's shares run ([`Replicas`]): worker threads on `device` (each runs forward
    /// and backward on its share with its own copy of the parameters, the gradients summed; burn's
    /// CPU backend keeps about one core busy per step, so on CPU this is how a step uses them
    /// all; on a GPU use 1), or several devices, the first being `device`.
    pub replicas: Replicas,
    /// Warm start of a new run (see [`warm_start`]).
    pub init_from: Option<PathBuf>,
    /// With `init_from`: parameter-path prefixes to re-initialise instead of copying (e.g. the
    /// output layers when what the network predicts changes).
    pub init_reset: Vec<String>,
    /// Wall-clock budget of this invocation in seconds (see [`budgeted_steps`]).
    pub time_budget: Option<f64>,
    /// Every this many steps, wait for the device after each phase of the step and print where
    /// the step's time went (host time to issue the work vs. waiting for the device); those
    /// steps run slower, the others are unaffected.
    pub profile_every: Option<u64>,
}

#[derive(Serialize)]
struct Metrics {
    step: u64,
    loss: f32,
    lr: f32,
    grad_norm: f32,
    clips_per_s: f32,
    elapsed_s: f32,
    skipped_steps: u64,
    /// With short-clip steps: `loss` is the last full-length step's loss (comparable with runs
    /// without them) and this the last short step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    short_loss: Option<f32>,
}

pub(crate) fn step_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ step.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// File names inside a run directory.
pub fn state_path(out: &Path) -> PathBuf {
    run::state_path(out)
}
pub fn model_path(out: &Path) -> PathBuf {
    out.join("teacher.safetensors")
}

/// Train (or resume) a teacher. Returns the final EMA model.
pub fn train_teacher(args: TrainArgs) -> anyhow::Result<Backbone> {
    let TrainArgs {
        config: mut cfg,
        config_path,
        out,
        resume,
        device,
        stop_at,
        quiet,
        replicas,
        init_from,
        init_reset,
        time_budget,
        profile_every,
    } = args;
    if let Some(b) = time_budget
        && !(b.is_finite() && b > 0.0)
    {
        bail!("--time-budget must be a positive number of seconds, got {b}");
    }
    let saved = run::open(&out, resume)?;
    let mc = &cfg.model;
    let source: Box<dyn ClipSource> = match &cfg.data.folder {
        Some(dir) => {
            let ds = FolderDataset::open(dir, mc.frames, mc.height, mc.width)?;
            eprintln!(
                "dataset: {} clips from {} ({} skipped)",
                ds.len(),
                dir.display(),
                ds.skipped.len()
            );
            Box::new(ds)
        }
        None => Box::new(ShapesSource::new(
            ShapesConfig {
                frames: mc.frames,
                height: mc.height,
                width: mc.width,
                two_object_prob: cfg.data.two_object_prob,
            },
            cfg.data.seed,
        )?),
    };
    // The same data at `short_frames` frames, for short-clip steps.
    let short_source: Option<Box<dyn ClipSource>> = match (cfg.data.short_frames, &cfg.data.folder)
    {
        (0, _) => None,
        (f, Some(dir)) => Some(Box::new(FolderDataset::open(dir, f, mc.height, mc.width)?)),
        (f, None) => Some(Box::new(ShapesSource::new(
            ShapesConfig {
                frames: f,
                height: mc.height,
                width: mc.width,
                two_object_prob: cfg.data.two_object_prob,
            },
            cfg.data.seed.wrapping_add(0x5107),
        )?)),
    };
    if cfg.data.short_frames > 0 {
        eprintln!(
            "short-clip steps: {:.0}% of steps train on {}-frame clips, {} per batch",
            100.0 * cfg.data.short_share,
            cfg.data.short_frames,
            cfg.data.short_batch_size
        );
    }

    let ad = device.clone().autodiff();
    let shares = replicas.shares(&ad);
    let mut model = run::seeded(&device, cfg.train.seed, || mc.init(&ad));
    let mut ema = model.valid();
    let mut optim = AdamW::new(
        cfg.train.beta1,
        cfg.train.beta2,
        1e-8,
        cfg.train.weight_decay,
    );
    let mut step: u64 = 0;
    let mut skipped: u64 = 0;
    // The step the EMA's warm-up counts from (a warm start with new parameters restarts it, so
    // the average does not cling to their initialisation).
    let mut ema_from: u64 = 0;
    let metrics_path = out.join("metrics.jsonl");

    if let Some(saved) = saved {
        let saved_cfg = saved
            .meta
            .get("config")
            .context("state file lacks its model config")?;
        let saved_model =
            flick_core::model::ModelConfig::from_value(serde_json::from_str(saved_cfg)?)
                .map_err(|e| anyhow::anyhow!("state file model config unreadable: {e}"))?;
        if &saved_model != mc {
            bail!(
                "{} was written for another model config; start a new run folder or use the same config",
                state_path(&out).display()
            );
        }
        step = saved.step()?;
        skipped = saved.number_or("skipped_steps", 0);
        ema_from = saved.number_or("ema_from_step", 0);
        model = load_module(model, &saved.tensors, "model.", &ad)?;
        ema = load_module(ema, &saved.tensors, "ema.", &device)?;
        optim.load_state(&saved.tensors, saved.field("adam_t")?.parse()?, &device);
        eprintln!("resumed from {} at step {step}", state_path(&out).display());
    }
    if let Some(src) = init_from.as_deref().filter(|_| step == 0) {
        let w = warm_start(src, model, ema, &mut optim, &init_reset, &ad, &device)?;
        (model, ema, step, skipped) = (w.model, w.ema, w.step, w.skipped);
        eprintln!("initialised from {} at step {step}", src.display());
        if !w.fresh.is_empty() {
            eprintln!(
                "new or reset parameters (kept at their initialisation; the EMA warm-up restarts): {}",
                w.fresh.join(", ")
            );
            ema_from = step;
        }
        // Carry the source run's curve up to the step, so this run's plot shows the whole history.
        let src_metrics = src.parent().unwrap_or(Path::new(".")).join("metrics.jsonl");
        if src_metrics.exists()
            && std::fs::canonicalize(&src_metrics).ok() != std::fs::canonicalize(&metrics_path).ok()
        {
            std::fs::copy(&src_metrics, &metrics_path)?;
        }
    }
    run::write_config(&out, &cfg)?;
    eprintln!(
        "model: {} parameters ({} in the text encoder); config {}",
        flick_core::params::count(&model),
        flick_core::params::count(model.text()),
        config_path.display()
    );

    let mut last = stop_at.map_or(cfg.train.steps, |s| s.min(cfg.train.steps));
    // A warm start's copied curve is cut back to its step like a resumed run's.
    let mut progress = run::Progress::start(&out, cfg.train.steps, step, quiet)?;
    let started = Instant::now();
    let mut guard = run::Guard::new(
        "training",
        "a lower train.lr or a tighter train.grad_clip",
        cfg.train.max_bad_steps,
        skipped,
    );
    let mut saved_step = step;
    let (mut last_full_loss, mut last_short_loss) = (f32::NAN, None::<f32>);
    let (mut loss_value, mut grad_norm) = (f32::NAN, f32::NAN);
    let mut unread = crate::optim::Unread::<(u64, bool)>::default();
    let mut budget_window: Option<Instant> = None;

    // Batches are made ahead, on other threads, while the current step computes (a GPU step is
    // faster than making its clips on one core). Their contents depend only on (seed, step), so
    // the stream is the same as making them inline.
    let first = step;
    let produce_until = last;
    let (batch_tx, batch_rx) = std::sync::mpsc::sync_channel::<Batch>(2);
    let producer_source = source;
    let producer_cfg = cfg.clone();
    let producer = std::thread::spawn(move || {
        for s in first..produce_until {
            let src = match &short_source {
                Some(short) if producer_cfg.data.is_short_step(s) => short.as_ref(),
                _ => producer_source.as_ref(),
            };
            if batch_tx.send(make_batch(src, &producer_cfg, s)).is_err() {
                break;
            }
        }
    });

    while step < last {
        // A profiled step (never the first few, which compile and autotune).
        let mut prof = profile_every
            .filter(|&n| n > 0 && step >= first + BUDGET_SKIP_STEPS && step.is_multiple_of(n))
            .map(|_| StepProfile::new(&device));
        let Batch {
            x0,
            shape,
            eps,
            times,
            prompts,
        } = batch_rx
            .recv()
            .context("the batch producer thread stopped")?;
        if let Some(p) = prof.as_mut() {
            p.lap("batch wait", false);
        }

        let lr = learning_rate(&cfg.train, step);
        let short = shape[2] < mc.frames;
        crate::optim::MEASURE_FORWARD.store(prof.is_some(), std::sync::atomic::Ordering::Relaxed);
        let (mut loss, mut grads) =
            parallel_grads(&model, &x0, shape, &eps, &times, &prompts, &shares);
        run::poison(&out, step, &mut grads, &mut loss);
        if let Some(p) = prof.as_mut() {
            p.split(
                "forward (to the loss value)",
                std::time::Duration::from_nanos(
                    crate::optim::FORWARD_NANOS.load(std::sync::atomic::Ordering::Relaxed),
                ),
            );
            p.lap("backward", true);
        }
        // AdamW and the EMA in one update (fused into one pass). EMA warm-up (as in
        // timm/diffusers): early on the average must not cling to the random initialisation.
        // Nothing is read back here: on a GPU the update is skipped on the device if the loss or
        // the gradient norm is not finite, and the step's loss and outcome are read with those of
        // the steps around it (below), while the device works on.
        let decay = run::ema_decay(cfg.train.ema_decay, step - ema_from);
        let (m, e, update) = optim.update(
            model,
            Some((ema, decay)),
            &grads,
            lr,
            cfg.train.grad_clip,
            Some(loss.clone()),
        );
        drop(grads);
        model = m;
        ema = e.expect("the EMA comes back");
        if let Some(p) = prof.as_mut() {
            p.lap("optimizer + EMA", true);
        }
        unread.push((step, short), loss, update);
        let profiled = prof.is_some();
        if let Some(p) = prof.take() {
            progress.say(&p.report(step, shape[0]));
        }
        step += 1;
        // Read the queued steps where something needs them (a log line, a checkpoint, the
        // budget's timing, a profile), and at least every MAX_UNREAD_STEPS steps, so that the
        // non-finite guard sees every step before anything is written.
        let timing = time_budget.is_some()
            && (step == first + BUDGET_SKIP_STEPS
                || step == first + BUDGET_SKIP_STEPS + BUDGET_MEASURE_STEPS);
        if step.is_multiple_of(cfg.train.log_every)
            || step.is_multiple_of(cfg.train.checkpoint_every)
            || (cfg.train.sample_every > 0 && step.is_multiple_of(cfg.train.sample_every))
            || step == last
            || timing
            || profiled
            || unread.len() >= MAX_UNREAD_STEPS
        {
            for ((at, short), value, stats) in unread.read() {
                if short {
                    last_short_loss = Some(value);
                } else {
                    last_full_loss = value;
                }
                loss_value = value;
                grad_norm = stats.as_ref().map_or(f32::NAN, |s| s.grad_norm);
                guard.check(at, stats.is_some(), value, &progress, &out, saved_step)?;
            }
            skipped = guard.skipped;
        }
        progress.advance(step, shape[0]);

        if let Some(budget) = time_budget {
            // Measure at full speed: the first steps pay for shader compilation and autotuning.
            if step == first + BUDGET_SKIP_STEPS {
                budget_window = Some(Instant::now());
            } else if step == first + BUDGET_SKIP_STEPS + BUDGET_MEASURE_STEPS {
                let per_step = budget_window.map_or(f64::NAN, |w| w.elapsed().as_secs_f64())
                    / BUDGET_MEASURE_STEPS as f64;
                let (steps, cooldown) = budgeted_steps(
                    &cfg.train,
                    first,
                    step,
                    budget - started.elapsed().as_secs_f64(),
                    per_step,
                );
                cfg.train.steps = steps;
                cfg.train.cooldown_steps = cooldown;
                last = stop_at.map_or(steps, |s| s.min(steps));
                run::write_config(&out, &cfg)?;
                progress.set_length(steps);
                progress.say(&format!(
                    "time budget {budget:.0} s: {per_step:.3} s/step at full speed, so {steps} steps in all (cool-down {cooldown}); written to {} (resume with that config)",
                    out.join("config.resolved.toml").display()
                ));
            }
        }

        if step.is_multiple_of(cfg.train.log_every) || step == last {
            let loss = if last_short_loss.is_some() && last_full_loss.is_finite() {
                last_full_loss
            } else {
                loss_value
            };
            let m = Metrics {
                step,
                loss,
                lr,
                grad_norm,
                clips_per_s: progress.clips_per_s(),
                elapsed_s: progress.elapsed_s(),
                skipped_steps: skipped,
                short_loss: last_short_loss,
            };
            let short_msg = last_short_loss
                .map(|l| format!(" (short clips {l:.4})"))
                .unwrap_or_default();
            progress.log(
                &m,
                format!("loss {loss:.4}{short_msg} · {:.1} clips/s", m.clips_per_s),
                &format!(
                    "step {step}/{} loss {loss:.4}{short_msg} lr {lr:.2e} grad-norm {grad_norm:.3} {:.1} clips/s",
                    cfg.train.steps, m.clips_per_s
                ),
            )?;
        }
        if step.is_multiple_of(cfg.train.checkpoint_every) || step == last {
            save_state(&out, &cfg, &model, &ema, &optim, step, skipped, ema_from)?;
            saved_step = step;
            run::plot(&out, "loss", "loss.png")?;
        }
        if cfg.train.sample_every > 0
            && (step.is_multiple_of(cfg.train.sample_every) || step == last)
        {
            write_samples(&out, &cfg, &ema, &device, step)?;
        }
    }
    progress.finish();
    drop(batch_rx);
    let _ = producer.join();
    Ok(ema)
}

/// Where one training step's time goes (`--profile-every`): for each phase, the host's time to
/// issue its work and, for device phases, the wait for the device to finish it after that. A
/// phase whose issue time is large and whose wait is small is bound by the host (per-op
/// overhead); the reverse by the device.
struct StepProfile {
    device: Device,
    start: Instant,
    last: Instant,
    phases: Vec<(&'static str, f64, f64)>,
}

impl StepProfile {
    fn new(device: &Device) -> Self {
        let _ = device.sync();
        let now = Instant::now();
        Self {
            device: device.clone(),
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// End a phase: its issue time, then (with `wait`) the device's remaining time.
    fn lap(&mut self, name: &'static str, wait: bool) {
        let issued = self.last.elapsed().as_secs_f64();
        let t = Instant::now();
        if wait {
            let _ = self.device.sync();
        }
        let waited = t.elapsed().as_secs_f64();
        self.phases.push((name, issued, waited));
        self.last = Instant::now();
    }

    /// End a phase that took `took` from the last lap (measured inside the step; it waited for
    /// the device itself).
    fn split(&mut self, name: &'static str, took: std::time::Duration) {
        self.phases.push((name, took.as_secs_f64(), 0.0));
        self.last += took;
    }

    fn report(&self, step: u64, batch: usize) -> String {
        let total = self.start.elapsed().as_secs_f64();
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(n, i, w)| format!("{n} {:.0}+{:.0} ms", i * 1e3, w * 1e3))
            .collect();
        format!(
            "profile step {step} (batch {batch}, host issue + device wait): {}; total {:.0} ms",
            phases.join(", "),
            total * 1e3
        )
    }
}

/// One step's inputs.
struct Batch {
    x0: Vec<f32>,
    shape: [usize; 5],
    eps: Vec<f32>,
    times: Vec<f32>,
    prompts: Vec<String>,
}

/// The inputs of step `step`: clips `step·b .. (step+1)·b` of the source (made on several
/// threads), then caption dropout, times and noise from the step's own random stream.
fn make_batch(source: &dyn ClipSource, cfg: &TeacherConfig, step: u64) -> Batch {
    let b = if cfg.data.is_short_step(step) {
        cfg.data.short_batch_size
    } else {
        cfg.train.batch_size
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16)
        .min(b);
    let per = b.div_ceil(threads);
    let samples: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..b)
            .step_by(per)
            .map(|lo| {
                let hi = (lo + per).min(b);
                scope.spawn(move || {
                    (lo..hi)
                        .map(|i| source.get(step * b as u64 + i as u64))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("clip maker panicked"))
            .collect()
    });
    let mut rng = step_rng(cfg.train.seed, step);
    let prompts: Vec<String> = samples
        .iter()
        .map(|s| {
            if rng.random::<f32>() < cfg.train.caption_dropout {
                String::new()
            } else {
                s.caption.clone()
            }
        })
        .collect();
    let clips: Vec<_> = samples.into_iter().map(|s| s.clip).collect();
    let (x0, shape) = stack(&clips);
    let times: Vec<f32> = (0..b).map(|_| cfg.flow.sample_time(&mut rng)).collect();
    // Every resolution's noise (one for all but the nested U-Net): each level's block for the
    // whole batch after the previous level's, so single-resolution streams are what they were.
    let eps = normal_vec(&mut rng, b * cfg.model.noise_len(shape[2]));
    Batch {
        x0,
        shape,
        eps,
        times,
        prompts,
    }
}

/// A model started from another run's weights.
struct WarmStart {
    model: Backbone,
    ema: Backbone,
    step: u64,
    skipped: u64,
    /// Parameters the source lacks (kept at their initialisation).
    fresh: Vec<String>,
}

/// Start a new run from `src`: a training state (`state.safetensors`: weights, EMA, AdamW
/// moments, step — the run continues at that step, its schedule and data position) or a model
/// checkpoint (weights for both the model and the EMA, step 0). Parameters with the same name
/// and shape are copied; parameters the source lacks keep their initialisation (zero-initialised
/// branches such as `head_modulation` or the text encoder's conv leave the function unchanged,
/// so a grown model starts exactly where the source stood).
fn warm_start(
    src: &Path,
    model: Backbone,
    ema: Backbone,
    optim: &mut AdamW,
    reset: &[String],
    ad: &Device,
    device: &Device,
) -> anyhow::Result<WarmStart> {
    let (tensors, meta) =
        read_safetensors(src).with_context(|| format!("--init-from {}", src.display()))?;
    if meta.get("format").map(String::as_str) == Some("flick-train-state/1") {
        let (model, fresh) =
            flick_core::checkpoint::load_module_partial(model, &tensors, "model.", ad, reset)?;
        let (ema, _) =
            flick_core::checkpoint::load_module_partial(ema, &tensors, "ema.", device, reset)?;
        optim.load_state(
            &tensors,
            meta.get("adam_t").context("state lacks adam_t")?.parse()?,
            device,
        );
        optim.forget(&fresh);
        let step = meta.get("step").context("state lacks step")?.parse()?;
        let skipped = meta
            .get("skipped_steps")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(WarmStart {
            model,
            ema,
            step,
            skipped,
            fresh,
        })
    } else {
        flick_core::checkpoint::info_from_metadata(&meta)
            .map_err(|e| anyhow::anyhow!("--init-from {}: {e}", src.display()))?;
        let (model, fresh) =
            flick_core::checkpoint::load_module_partial(model, &tensors, "", ad, reset)?;
        let (ema, _) =
            flick_core::checkpoint::load_module_partial(ema, &tensors, "", device, reset)?;
        Ok(WarmStart {
            model,
            ema,
            step: 0,
            skipped: 0,
            fresh,
        })
    }
}

/// Mean-squared flow-matching loss of one batch (not read: a `[1]` tensor) and its gradients by
/// parameter path, the batch split over the replicas' `shares` (see
/// [`crate::optim::data_parallel_grads`]).
#[allow(clippy::too_many_arguments)]
fn parallel_grads(
    model: &Backbone,
    x0: &[f32],
    shape: [usize; 5],
    eps: &[f32],
    times: &[f32],
    prompts: &[String],
    shares: &[Device],
) -> (Tensor<1>, HashMap<String, Tensor<1>>) {
    let per_clip = x0.len() / shape[0];
    let b = shape[0];
    data_parallel_grads_unread(model, b, shares, |local, lo, hi, ad| {
        let n = hi - lo;
        let sh = [n, shape[1], shape[2], shape[3], shape[4]];
        let x0 = Tensor::<5>::from_data(
            TensorData::new(x0[lo * per_clip..hi * per_clip].to_vec(), sh),
            ad,
        );
        // Level r's noise: its block of the batch's noise, this worker's clips of it.
        let mut offset = 0;
        let eps: Vec<Tensor<5>> = (0..local.levels())
            .map(|r| {
                let (h, w) = (shape[3] >> r, shape[4] >> r);
                let per = shape[1] * shape[2] * h * w;
                let values = eps[offset + lo * per..offset + hi * per].to_vec();
                offset += b * per;
                Tensor::<5>::from_data(TensorData::new(values, [n, shape[1], shape[2], h, w]), ad)
            })
            .collect();
        let t = Tensor::<1>::from_data(TensorData::new(times[lo..hi].to_vec(), [n]), ad);
        let text = local.encode_text(&prompts[lo..hi], ad);
        local.flow_loss(x0, eps, t, &text)
    })
}

/// The most training steps queued on the device before their losses and outcomes are read.
const MAX_UNREAD_STEPS: usize = 32;

/// Steps a `--time-budget` run skips before it times its steps (compilation, autotuning), and the
/// steps it times.
const BUDGET_SKIP_STEPS: u64 = 5;
const BUDGET_MEASURE_STEPS: u64 = 15;

/// The total number of steps, and the cool-down, of a run that started at step `first`, stands at
/// step `now` with `seconds_left` of its budget and takes `per_step` seconds a step: the steps
/// that fit (with a 5% margin for checkpoints), never more than the config's `steps` nor fewer
/// than `now`; the config's cool-down is scaled with the run's length (the same fraction of the
/// steps this invocation trains), and never begins before `now`.
pub fn budgeted_steps(
    t: &crate::config::TrainConfig,
    first: u64,
    now: u64,
    seconds_left: f64,
    per_step: f64,
) -> (u64, u64) {
    let more = if per_step.is_finite() && per_step > 0.0 {
        (seconds_left.max(0.0) * 0.95 / per_step) as u64
    } else {
        0
    };
    let steps = (now + more).min(t.steps).max(now);
    let planned = t.steps.saturating_sub(first).max(1) as f64;
    let cooldown = ((t.cooldown_steps as f64 * (steps - first) as f64 / planned).round() as u64)
        .min(steps - now);
    (steps, cooldown)
}

/// Warm-up, constant, then the optional linear cool-down to 10% (see `TrainConfig`).
pub fn learning_rate(t: &crate::config::TrainConfig, step: u64) -> f32 {
    let warm = ((step + 1) as f32 / t.warmup_steps.max(1) as f32).min(1.0);
    let start = t.steps.saturating_sub(t.cooldown_steps);
    let cool = if t.cooldown_steps > 0 && step >= start {
        1.0 - 0.9 * ((step - start) as f32 / t.cooldown_steps as f32).min(1.0)
    } else {
        1.0
    };
    t.lr * warm * cool
}

#[allow(clippy::too_many_arguments)]
fn save_state(
    out: &Path,
    cfg: &TeacherConfig,
    model: &Backbone,
    ema: &Backbone,
    optim: &AdamW,
    step: u64,
    skipped: u64,
    ema_from: u64,
) -> anyhow::Result<()> {
    let mut tensors = NamedTensors::new();
    module_tensors(model, "model.", &mut tensors);
    module_tensors(ema, "ema.", &mut tensors);
    optim.state_tensors(&mut tensors);
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "flick-train-state/1".into());
    meta.insert("config".into(), serde_json::to_string(&cfg.model)?);
    meta.insert("step".into(), step.to_string());
    meta.insert("adam_t".into(), optim.t().to_string());
    meta.insert("skipped_steps".into(), skipped.to_string());
    meta.insert("ema_from_step".into(), ema_from.to_string());
    write_safetensors(&state_path(out), &tensors, meta)?;
    run::keep_history(out, step, cfg.train.keep_checkpoints)?;
    // The model people use: EMA weights + sampling defaults.
    let mut tensors = NamedTensors::new();
    module_tensors(ema, "", &mut tensors);
    write_safetensors(
        &model_path(out),
        &tensors,
        model_metadata("teacher", &cfg.model, &teacher_extra(cfg, step)),
    )?;
    Ok(())
}

/// Metadata recorded in a teacher checkpoint besides its config.
pub fn teacher_extra(cfg: &TeacherConfig, step: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("step".to_string(), step.to_string()),
        ("shift".to_string(), cfg.flow.shift.to_string()),
        ("steps".to_string(), cfg.sample.steps.to_string()),
        ("guidance".to_string(), cfg.sample.guidance.to_string()),
    ])
}

fn write_samples(
    out: &Path,
    cfg: &TeacherConfig,
    ema: &Backbone,
    device: &Device,
    step: u64,
) -> anyhow::Result<()> {
    if cfg.sample.prompts.is_empty() {
        return Ok(());
    }
    let info = flick_core::checkpoint::CheckpointInfo {
        kind: "teacher".into(),
        config: cfg.model.clone(),
        extra: teacher_extra(cfg, step),
    };
    let generator = Generator::new(ema.clone(), info, device.clone());
    let seeds: Vec<u64> = (0..cfg.sample.prompts.len() as u64).collect();
    let clips = generator.generate_clips(
        &cfg.sample.prompts,
        &seeds,
        cfg.sample.steps,
        cfg.sample.guidance,
        |_, _| {},
    )?;
    let videos: Vec<Video> = clips.iter().map(Video::from_clip).collect();
    let dir = out.join("samples");
    std::fs::create_dir_all(&dir)?;
    frame_grid(&videos, 3).save(dir.join(format!("step_{step:06}.png")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_budget_sets_the_steps_that_fit_and_scales_the_cooldown() {
        let mut cfg = TeacherConfig::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/teacher-tiny.toml"),
        )
        .unwrap()
        .train;
        cfg.steps = 1000;
        cfg.cooldown_steps = 200;
        // 100 s left at 0.5 s/step from step 20 of a fresh run: 190 more steps (5% margin).
        assert_eq!(budgeted_steps(&cfg, 0, 20, 100.0, 0.5), (210, 42));
        // Resumed at step 400: the cool-down is the same fraction of the steps this run trains.
        assert_eq!(budgeted_steps(&cfg, 400, 420, 100.0, 0.5), (610, 70));
        // Never past the config's total, never before the current step.
        assert_eq!(budgeted_steps(&cfg, 0, 20, 1e9, 0.5), (1000, 200));
        assert_eq!(budgeted_steps(&cfg, 0, 20, -5.0, 0.5), (20, 0));
        assert_eq!(budgeted_steps(&cfg, 0, 20, 100.0, f64::NAN), (20, 0));
        // The cool-down never starts before the current step.
        cfg.cooldown_steps = 1000;
        assert_eq!(budgeted_steps(&cfg, 0, 20, 10.0, 0.5), (39, 19));
    }

    #[test]
    fn learning_rate_warms_up_holds_and_cools_down() {
        let mut cfg = TeacherConfig::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/teacher-tiny.toml"),
        )
        .unwrap()
        .train;
        cfg.lr = 1.0;
        cfg.warmup_steps = 10;
        cfg.steps = 100;
        cfg.cooldown_steps = 0;
        assert!((learning_rate(&cfg, 0) - 0.1).abs() < 1e-6);
        assert_eq!(learning_rate(&cfg, 9), 1.0);
        assert_eq!(learning_rate(&cfg, 99), 1.0);
        cfg.cooldown_steps = 20;
        assert_eq!(learning_rate(&cfg, 79), 1.0);
        assert_eq!(learning_rate(&cfg, 80), 1.0);
        assert!((learning_rate(&cfg, 90) - 0.55).abs() < 1e-6);
        assert!((learning_rate(&cfg, 100) - 0.1).abs() < 1e-6);
    }
}
