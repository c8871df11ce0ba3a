//! The `flick` command line: argument parsing and the commands' top level.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flick_core::device::{BackendKind, DeviceList, describe, open, open_devices};
use flick_core::generate::{Generator, MAX_GUIDANCE, MAX_STEPS};

use crate::{config, train};

use flick_core::bundled;

#[derive(Parser)]
#[command(
    name = "flick",
    version,
    about = "One-step text-to-video generation that runs anywhere WebGPU does"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// On the wgpu backend, use burn's composed operations instead of Flick's fused WGSL kernels
    /// (attention, adaLN, convolutions, clip → pixels), for comparison
    #[arg(long, global = true)]
    no_fused: bool,
    /// Invocations per row of the attention kernels (1, 2, 4 or 8) instead of the automatic
    /// choice, for measurements
    #[arg(long, global = true, value_parser = clap::builder::ValueParser::new(|s: &str| match s.parse::<u32>() { Ok(v @ (1 | 2 | 4 | 8)) => Ok(v), _ => Err(format!("{s}: 1, 2, 4 or 8")) }))]
    attention_splits: Option<u32>,
    /// Folder of the bundled models (teacher, one-step generator, probe). Default: $FLICK_MODELS,
    /// then `models/` beside the executable, then the source tree it was built from
    #[arg(long = "models", global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Train the flow-matching video teacher (resumable).
    TrainTeacher {
        /// TOML config, e.g. configs/teacher-small.toml
        #[arg(long)]
        config: PathBuf,
        /// Run folder (checkpoints, metrics, curves, samples). Default: runs/<config name>
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in --out from its last checkpoint
        #[arg(long)]
        resume: bool,
        /// `cpu` (burn flex) or `wgpu`
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        /// Stop after this step (the schedule still follows the config's total)
        #[arg(long, value_parser = ranged_u64(1, MAX_TRAIN_STEPS))]
        stop_at: Option<u64>,
        /// Override the config's total number of steps
        #[arg(long, value_parser = ranged_u64(1, MAX_TRAIN_STEPS))]
        steps: Option<u64>,
        /// Data-parallel worker threads splitting each batch (default: the CPU cores on
        /// `cpu`, 1 on `wgpu`)
        #[arg(long, value_parser = ranged_usize(1, 256))]
        workers: Option<usize>,
        /// wgpu adapters to train on, by index (comma-separated; an index given twice is a
        /// second replica on that adapter) or `all`: each computes a share of the batch, the
        /// gradients are summed on the first, which steps the optimizer. Implies `--backend
        /// wgpu`; an unknown index lists the adapters found
        #[arg(long, value_name = "LIST")]
        devices: Option<DeviceList>,
        /// Start a new run from another run's state.safetensors (continuing at its step) or a
        /// checkpoint; parameters it lacks (a grown model) keep their initialisation
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// With --init-from: parameter-path prefixes to re-initialise instead of copying
        /// (comma-separated, e.g. final_proj,head1,head2,head_ada when `prediction` changes)
        #[arg(long, value_delimiter = ',')]
        init_reset: Vec<String>,
        /// Wall-clock budget in seconds for this invocation (shader compilation included): after
        /// a few steps at full speed the run measures its throughput and sets the total number of
        /// steps (the config's `steps` is the upper bound) so that it ends, cool-down included,
        /// inside the budget; the chosen total is written to config.resolved.toml
        #[arg(long, value_parser = positive_seconds)]
        time_budget: Option<f64>,
        /// Every N steps, wait for the device after each phase of the step (forward+backward,
        /// optimizer, EMA) and print the host's time to issue it and the device's time to finish
        #[arg(long, value_parser = ranged_u64(1, MAX_TRAIN_STEPS))]
        profile_every: Option<u64>,
    },
    /// Train the attribute probe that `flick eval` judges clips with (resumable).
    TrainProbe {
        /// TOML config, e.g. configs/probe.toml
        #[arg(long, default_value = "configs/probe.toml")]
        config: PathBuf,
        /// Run folder; the probe is written to <out>/probe.safetensors
        #[arg(long, default_value = "runs/probe")]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint
        #[arg(long)]
        resume: bool,
        /// `cpu` (burn flex) or `wgpu`
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        /// Data-parallel worker threads (default: the CPU cores on `cpu`, 1 on `wgpu`)
        #[arg(long, value_parser = ranged_usize(1, 256))]
        workers: Option<usize>,
        /// wgpu adapters to train on, by index (comma-separated; an index given twice is a
        /// second replica on that adapter) or `all`: each computes a share of the batch, the
        /// gradients are summed on the first, which steps the optimizer. Implies `--backend
        /// wgpu`; an unknown index lists the adapters found
        #[arg(long, value_name = "LIST")]
        devices: Option<DeviceList>,
    },
    /// Distil the teacher into a one-step generator: teacher pairs, the deterministic init,
    /// adversarial post-training (APT).
    Distill {
        #[command(subcommand)]
        stage: DistillStage,
    },
    /// Quality table on held-out prompts, judged by the attribute probe (eval.md, eval.json,
    /// grids, bar chart).
    Eval {
        /// [LABEL=]CHECKPOINT@STEPS[:GUIDANCE], repeatable; default: the bundled teacher at 1,
        /// 2, 4, 8 and 25 steps
        #[arg(long = "model")]
        models: Vec<crate::eval::ModelSpec>,
        /// The attribute probe (`flick train-probe`). Default: the bundled one
        #[arg(long)]
        probe: Option<PathBuf>,
        /// Held-out prompts
        #[arg(long, default_value_t = 24, value_parser = ranged_usize(0, 10_000))]
        prompts: usize,
        /// Seeds per prompt
        #[arg(long, default_value_t = 4, value_parser = ranged_usize(1, 1_000))]
        seeds: usize,
        /// Clips generated per batch
        #[arg(long, default_value_t = 8, value_parser = ranged_usize(1, 4_096))]
        batch: usize,
        /// Output folder
        #[arg(long, default_value = "eval")]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
    },
    /// Write a frame grid of procedural training clips with their captions (to look at the data).
    DataPreview {
        #[arg(long, default_value = "data-preview.png")]
        out: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = ranged_u64(1, 100_000))]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `train` or `held-out`
        #[arg(long, default_value = "train")]
        split: String,
    },
    /// Score generated clips against their prompts, reading attributes from the pixels
    /// (single-object prompts from the training distribution and the held-out combinations).
    Score {
        /// Checkpoint (.safetensors); default: the bundled model
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Step counts to score (comma-separated), e.g. 1,4,25
        #[arg(long, value_delimiter = ',', default_value = "25", value_parser = ranged_usize(1, MAX_STEPS))]
        steps: Vec<usize>,
        #[arg(long, value_parser = guidance_scale)]
        guidance: Option<f32>,
        /// Sampling time shift; default: the checkpoint's (the shift it was trained with)
        #[arg(long, value_parser = time_shift)]
        shift: Option<f32>,
        /// Skip the diagnostics: per-t error, caption sensitivity, one-word sensitivity and the
        /// model-as-classifier tables
        #[arg(long)]
        no_sensitivity: bool,
        /// Also re-generate real clips noised to these times (comma-separated, e.g.
        /// 0.5,0.8,0.95) and write grids of real vs re-made into --grids (default: renoise/)
        #[arg(long, value_delimiter = ',')]
        renoise: Vec<f32>,
        /// Prompts per split (0: skip the attribute table)
        #[arg(long, default_value_t = 48, value_parser = ranged_usize(0, 10_000))]
        prompts: usize,
        #[arg(long, default_value_t = 8, value_parser = ranged_usize(1, 4_096))]
        batch: usize,
        /// Where to write sample grids (one per split and step count)
        #[arg(long)]
        grids: Option<PathBuf>,
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
    },
    /// Benchmark Flick's fused kernels against burn's composed operations on one device (and
    /// the model with them on and off, one step against 25): criterion, ratios in one run.
    Bench {
        /// `wgpu` (the kernels' home) or `cpu`
        #[arg(long, default_value = "wgpu")]
        backend: BackendKind,
        /// Output folder (bench.md, bench.json, criterion's data)
        #[arg(long, default_value = "runs/bench")]
        out: PathBuf,
        /// Shorter measurements (slow devices, smoke tests)
        #[arg(long)]
        quick: bool,
        /// Batch of the kernel shapes and of the training step
        #[arg(long, default_value_t = 32, value_parser = ranged_usize(1, 4_096))]
        batch: usize,
        /// Run only the benchmarks whose name contains one of these (comma-separated, e.g.
        /// `attention,adaLN`)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Instead of the kernel benchmarks: the whole training step of the bundled teacher
        /// (forward, backward, AdamW, EMA) and one-step generation, timed like the PyTorch
        /// twin's `--bench` (`scripts/bench-train.sh` runs both); writes train.jsonl
        #[arg(long)]
        train: bool,
        /// `--train`: batch sizes of the training step (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "16,64", value_parser = ranged_usize(1, 4_096))]
        train_batches: Vec<usize>,
        /// `--train`: data-parallel workers to measure (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = ranged_usize(1, 256))]
        train_workers: Vec<usize>,
        /// `--train`: measure the data-parallel step over these wgpu adapters (as `train-teacher
        /// --devices`; an index given twice is a second replica on that adapter) instead of
        /// `--train-workers`: the first device alone, then all of them, at the same batch
        #[arg(long, value_name = "LIST")]
        devices: Option<DeviceList>,
        /// `--train`: timed steps per configuration (after two untimed ones)
        #[arg(long, default_value_t = 5, value_parser = ranged_usize(1, 1_000))]
        train_steps: usize,
    },
    /// Generate a clip from a prompt.
    Generate {
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Denoising steps; default: the checkpoint's recommendation. `--steps 1` without
        /// `--checkpoint` uses the bundled one-step generator (models/generator-small.safetensors)
        /// when there is one
        #[arg(long, value_parser = ranged_usize(1, MAX_STEPS))]
        steps: Option<usize>,
        /// Classifier-free guidance scale (1 = off); default: the checkpoint's recommendation
        #[arg(long, value_parser = guidance_scale)]
        guidance: Option<f32>,
        /// Sampling time shift; default: the checkpoint's (the shift it was trained with)
        #[arg(long, value_parser = time_shift)]
        shift: Option<f32>,
        /// Output GIF
        #[arg(long, default_value = "clip.gif")]
        out: PathBuf,
        /// Also write each frame as PNG into this folder
        #[arg(long)]
        frames_dir: Option<PathBuf>,
        /// Also write a PNG of the sampler's clean-clip estimate x̂0 = x_t − t·v̂ at each step (one
        /// row per step, at most 13 rows): how the clip forms
        #[arg(long)]
        trajectory: Option<PathBuf>,
        /// Checkpoint (.safetensors); default: the bundled model
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// `cpu` (burn flex) or `wgpu`
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        /// Integer upscale of the written frames (nearest neighbour)
        #[arg(long, default_value_t = 1, value_parser = ranged_usize(1, 64))]
        scale: usize,
        /// GIF frame rate
        #[arg(long, default_value_t = 8, value_parser = ranged_u32(1, 100))]
        fps: u32,
    },
    /// Copy a checkpoint with its weights stored smaller (the web page's download): f16 (half
    /// the bytes) or 8-bit with a scale per block of 32 (a little over a quarter); back to f32
    /// on load
    Convert {
        /// The f32 checkpoint
        input: PathBuf,
        /// Where to write the copy
        output: PathBuf,
        /// Store the weights as f16
        #[arg(long, conflicts_with = "q8")]
        f16: bool,
        /// Store the large weights as 8-bit integers with an f16 scale per block of 32 (small
        /// tensors as f16)
        #[arg(long)]
        q8: bool,
    },
}

/// Options every `flick distill` stage shares.
#[derive(clap::Args)]
struct DistillCommon {
    /// TOML config, e.g. configs/distill-small.toml
    #[arg(long, default_value = "configs/distill-small.toml")]
    config: PathBuf,
    /// The multi-step teacher; default: the bundled model
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Output folder (pairs cache or run folder)
    #[arg(long)]
    out: PathBuf,
    /// Continue from the last checkpoint in --out (pairs: completes the cache)
    #[arg(long)]
    resume: bool,
    /// `cpu` (burn flex) or `wgpu`
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// Data-parallel worker threads (default: the CPU cores on `cpu`, 1 on `wgpu`)
    #[arg(long, value_parser = ranged_usize(1, 256))]
    workers: Option<usize>,
    /// wgpu adapters to train on, by index (comma-separated; an index given twice is a
    /// second replica on that adapter) or `all`: each computes a share of the batch, the
    /// gradients are summed on the first, which steps the optimizer. Implies `--backend
    /// wgpu`; an unknown index lists the adapters found
    #[arg(long, value_name = "LIST")]
    devices: Option<DeviceList>,
    /// Stop after this step (the schedule still follows the config)
    #[arg(long, value_parser = ranged_u64(1, MAX_TRAIN_STEPS))]
    stop_at: Option<u64>,
}

#[derive(Subcommand)]
enum DistillStage {
    /// Teacher ODE pairs (z, caption, x_teacher), cached in shards (resumable)
    Pairs {
        #[command(flatten)]
        common: DistillCommon,
    },
    /// Deterministic distillation init: MSE of G(z, c) = z − v̂(z, c, 1) to the teacher's clip
    Consistency {
        #[command(flatten)]
        common: DistillCommon,
        /// The pairs cache (`flick distill pairs --out`)
        #[arg(long)]
        pairs: PathBuf,
    },
    /// Adversarial post-training from the deterministic init
    Apt {
        #[command(flatten)]
        common: DistillCommon,
        /// The deterministic init (`flick distill consistency`'s generator.safetensors)
        #[arg(long)]
        init: PathBuf,
        /// Override the config's `apt.loss` (`non_saturating`, `relativistic`, `wgan`): the
        /// ablations run the same config with another objective
        #[arg(long)]
        loss: Option<String>,
        /// Override the config's `apt.r1` (`approx`, `fd`, `none`)
        #[arg(long)]
        r1: Option<String>,
    },
    /// Distribution matching distillation (DMD, DMD2): the generator against the teacher's
    /// guided score and an online fake score
    Dmd {
        #[command(flatten)]
        common: DistillCommon,
        /// The generator's start (the consistency init's generator.safetensors, or the teacher)
        #[arg(long)]
        init: PathBuf,
        /// The teacher's pair cache (`flick distill pairs`), for DMD's regression loss
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Override the config's `dmd.variant` (`dmd` or `dmd2`)
        #[arg(long)]
        variant: Option<String>,
        /// Override the config's `dmd.generator_times`: a multi-step generator trained with
        /// backward simulation, e.g. `1,0.75,0.5,0.25` (`1` = one step)
        #[arg(long, value_delimiter = ',')]
        times: Option<Vec<f32>>,
    },
}

fn distill(stage: DistillStage, models: Option<&Path>) -> anyhow::Result<()> {
    let common = match &stage {
        DistillStage::Pairs { common }
        | DistillStage::Consistency { common, .. }
        | DistillStage::Apt { common, .. }
        | DistillStage::Dmd { common, .. } => common,
    };
    let mut cfg = crate::distill::DistillConfig::load(&common.config)?;
    if let DistillStage::Apt { loss, r1, .. } = &stage {
        if let Some(l) = loss {
            cfg.apt.loss = serde_json::from_value(serde_json::Value::String(l.clone()))
                .with_context(|| format!("--loss {l}"))?;
        }
        if let Some(r) = r1 {
            cfg.apt.r1 = serde_json::from_value(serde_json::Value::String(r.clone()))
                .with_context(|| format!("--r1 {r}"))?;
        }
    }
    if let DistillStage::Dmd { variant, times, .. } = &stage {
        let dmd = cfg
            .dmd
            .as_mut()
            .context("the distill config has no [dmd] section")?;
        if let Some(v) = variant {
            dmd.variant = serde_json::from_value(serde_json::Value::String(v.clone()))
                .with_context(|| format!("--variant {v}: use dmd or dmd2"))?;
        }
        if let Some(t) = times {
            dmd.generator_times = if t.as_slice() == [1.0] {
                Vec::new()
            } else {
                t.clone()
            };
        }
    }
    let teacher = match &common.teacher {
        Some(t) => t.clone(),
        None => bundled::find(bundled::TEACHER, models)?,
    };
    let (device, replicas) = placement(common.backend, common.workers, common.devices.as_ref())?;
    match &stage {
        DistillStage::Pairs { common } => {
            if !common.resume
                && common.out.exists()
                && std::fs::read_dir(&common.out)
                    .with_context(|| format!("--out {}", common.out.display()))?
                    .next()
                    .is_some()
            {
                anyhow::bail!(
                    "{} is not empty; pass --resume to complete that cache or choose another --out",
                    common.out.display()
                );
            }
            let n = crate::distill::make_pairs(&cfg.pairs, &teacher, &common.out, &device, false)?;
            eprintln!("done: {n} pairs in {}", common.out.display());
        }
        DistillStage::Consistency { common, pairs } => {
            crate::distill::train_consistency(
                &cfg,
                &teacher,
                pairs,
                &common.out,
                common.resume,
                &device,
                &replicas,
                common.stop_at,
                false,
            )?;
            eprintln!(
                "done: generator in {}",
                common.out.join("generator.safetensors").display()
            );
        }
        DistillStage::Apt { common, init, .. } => {
            crate::distill::train_apt(crate::distill::AptArgs {
                cfg: &cfg,
                teacher: &teacher,
                init,
                out: &common.out,
                resume: common.resume,
                device,
                replicas,
                stop_at: common.stop_at,
                quiet: false,
            })?;
            eprintln!(
                "done: generator (EMA) in {}",
                common.out.join("generator.safetensors").display()
            );
        }
        DistillStage::Dmd {
            common,
            init,
            pairs,
            ..
        } => {
            crate::dmd::train_dmd(crate::dmd::DmdArgs {
                cfg: &cfg,
                teacher: &teacher,
                init,
                pairs: pairs.as_deref(),
                probe: Some(&bundled::find(bundled::PROBE, models)?),
                out: &common.out,
                resume: common.resume,
                device,
                replicas,
                stop_at: common.stop_at,
                quiet: false,
            })?;
            eprintln!(
                "done: generator (EMA) in {}",
                common.out.join("generator.safetensors").display()
            );
        }
    }
    Ok(())
}

/// Parse the process arguments and run; errors are printed and exit with status 1.
pub fn main() {
    crate::heap::keep_freed_memory();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    flick_core::shaders::set_fused(!cli.no_fused);
    flick_core::shaders::force_attention_splits(cli.attention_splits);
    let models_dir = cli.models_dir.as_deref();
    let teacher = || bundled::find(bundled::TEACHER, models_dir);
    match cli.command {
        Command::TrainTeacher {
            config,
            out,
            resume,
            backend,
            stop_at,
            steps,
            workers,
            devices,
            init_from,
            init_reset,
            time_budget,
            profile_every,
        } => {
            let mut cfg = config::TeacherConfig::load(&config)?;
            if let Some(s) = steps {
                cfg.train.steps = s;
            }
            let out = out.unwrap_or_else(|| {
                PathBuf::from("runs").join(config.file_stem().unwrap_or_default())
            });
            let (device, replicas) = placement(backend, workers, devices.as_ref())?;
            train::train_teacher(train::TrainArgs {
                config: cfg,
                config_path: config,
                out: out.clone(),
                resume,
                device,
                stop_at,
                quiet: false,
                replicas,
                init_from,
                init_reset,
                time_budget,
                profile_every,
            })?;
            eprintln!(
                "done: model in {}, curve in {}",
                train::model_path(&out).display(),
                out.join("loss.png").display()
            );
            Ok(())
        }
        Command::TrainProbe {
            config,
            out,
            resume,
            backend,
            workers,
            devices,
        } => {
            let cfg = crate::probe::ProbeTrainConfig::load(&config)?;
            let (device, replicas) = placement(backend, workers, devices.as_ref())?;
            let acc = crate::probe::train_probe(&cfg, &out, resume, &device, &replicas, false)?;
            let line = acc
                .iter()
                .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            eprintln!(
                "done: probe in {}; held-out accuracy: {line}",
                crate::probe::model_path(&out).display()
            );
            Ok(())
        }
        Command::Distill { stage } => distill(stage, models_dir),
        Command::Convert {
            input,
            output,
            f16,
            q8,
        } => {
            anyhow::ensure!(f16 || q8, "say what to convert to: --f16 or --q8");
            let change = if q8 {
                flick_core::checkpoint::convert_to_q8(&input, &output)?
            } else {
                flick_core::checkpoint::convert_to_f16(&input, &output)?
            };
            let size = |p: &PathBuf| {
                std::fs::metadata(p)
                    .map(|m| m.len() as f64 / 1e6)
                    .unwrap_or(f64::NAN)
            };
            eprintln!(
                "wrote {} ({:.1} MB, from {:.1} MB; largest weight change {change:.2e})",
                output.display(),
                size(&output),
                size(&input)
            );
            Ok(())
        }
        Command::Eval {
            models,
            probe,
            prompts,
            seeds,
            batch,
            out,
            backend,
        } => {
            let device = open(backend)?;
            eprintln!("backend: {}", describe(&device));
            let models = if models.is_empty() {
                let path = teacher()?;
                [1, 2, 4, 8, 25]
                    .into_iter()
                    .map(|steps| crate::eval::ModelSpec {
                        path: path.clone(),
                        steps,
                        guidance: None,
                        label: Some("teacher".into()),
                    })
                    .collect()
            } else {
                models
            };
            let probe = match probe {
                Some(p) => p,
                None => bundled::find(bundled::PROBE, models_dir)?,
            };
            crate::eval::run(&crate::eval::EvalArgs {
                models,
                probe,
                prompts,
                seeds,
                batch,
                out,
                device,
                quiet: false,
            })?;
            Ok(())
        }
        Command::DataPreview {
            out,
            count,
            seed,
            split,
        } => {
            use flick_core::data::shapes::{ShapesConfig, ShapesSource, Split};
            let split = match split.as_str() {
                "train" => Split::Train,
                "held-out" | "heldout" => Split::HeldOut,
                other => anyhow::bail!("--split {other:?}: use `train` or `held-out`"),
            };
            let source = ShapesSource::new(ShapesConfig::default(), seed)?;
            let mut videos = Vec::new();
            for i in 0..count {
                let s = source.sample(split, i);
                println!("{i}: {}", s.caption);
                videos.push(flick_core::video::Video::from_clip(&s.clip));
            }
            flick_core::video::frame_grid(&videos, 3).save(&out)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::Score {
            checkpoint,
            steps,
            guidance,
            shift,
            no_sensitivity,
            renoise,
            prompts,
            batch,
            grids,
            backend,
        } => {
            let path = match checkpoint {
                Some(c) => c,
                None => teacher()?,
            };
            let device = open(backend)?;
            eprintln!("backend: {}", describe(&device));
            let mut generator = Generator::load(&path, &device)?;
            if let Some(s) = shift {
                anyhow::ensure!(
                    s > 0.0 && s.is_finite(),
                    "--shift must be a positive number"
                );
                generator.shift = s;
            }
            let guidance = guidance.unwrap_or(generator.defaults().guidance);
            let mut rows = Vec::new();
            // `--prompts 0`: no attribute table, only the diagnostics below.
            for s in steps.into_iter().filter(|_| prompts > 0) {
                anyhow::ensure!(s >= 1, "--steps must be ≥ 1");
                eprintln!(
                    "scoring {} at {s} steps, guidance {guidance}, {prompts} prompts per split…",
                    path.display()
                );
                rows.push((
                    format!(
                        "{} @{s} (w={guidance}, shift {})",
                        path.file_stem().unwrap_or_default().to_string_lossy(),
                        generator.shift
                    ),
                    crate::score::score(&generator, prompts, s, guidance, batch, grids.as_deref())?,
                ));
            }
            if !rows.is_empty() {
                println!("{}", crate::score::table(&rows));
            }
            if !renoise.is_empty() {
                let dir = grids.clone().unwrap_or_else(|| PathBuf::from("renoise"));
                crate::score::renoise_grids(&generator, &renoise, 25, guidance, &dir)?;
            }
            if no_sensitivity {
                return Ok(());
            }
            println!(
                "denoising error on 32 real train-like clips with their captions:\n\n| t | loss \\|v̂ − v\\|² | best linear guess | RMS error of x̂0 |\n|---|---|---|---|"
            );
            for (t, loss, linear, x0) in crate::score::loss_by_time(
                &generator,
                32,
                &[0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95],
            ) {
                println!("| {t} | {loss:.4} | {linear:.4} | {x0:.4} |");
            }
            let sens = crate::score::caption_sensitivity(
                &generator,
                16,
                &[0.2, 0.5, 0.8, 0.9, 0.95, 0.99],
            );
            println!(
                "caption sensitivity (|v(c) − v(·)| / |v(c)|, 16 train-like prompts, x_t from their real clips):\n\n| t | vs empty prompt | vs a wrong caption |\n|---|---|---|"
            );
            for (t, u, w) in sens {
                println!("| {t} | {u:.3} | {w:.3} |");
            }
            let attr = crate::score::attribute_sensitivity(&generator, 16, &[0.5, 0.8, 0.9, 0.95]);
            println!(
                "\none word changed (|v(c) − v(c')| / |v(c)|, c' = the caption with one attribute changed):\n\n| t | shape | colour | size | motion |\n|---|---|---|---|---|"
            );
            for (t, [sh, co, si, mo]) in attr {
                println!("| {t} | {sh:.3} | {co:.3} | {si:.3} | {mo:.3} |");
            }
            let times = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95];
            println!(
                "\nthe model as a classifier (32 real train-like clips noised to t, one noise draw: the share where the caption with the clip's own value of an attribute denoises best among every value of that attribute):\n\n| t | shape (chance 25%) | colour (14%) | size (50%) | motion (17%) |\n|---|---|---|---|---|"
            );
            for (i, [sh, co, si, mo]) in crate::score::word_classification(&generator, 32, &times)
                .into_iter()
                .enumerate()
            {
                let t = times
                    .get(i)
                    .map_or("all (summed)".to_string(), |t| t.to_string());
                println!(
                    "| {t} | {:.0}% | {:.0}% | {:.0}% | {:.0}% |",
                    sh * 100.0,
                    co * 100.0,
                    si * 100.0,
                    mo * 100.0
                );
            }
            Ok(())
        }
        Command::Bench {
            backend,
            out,
            quick,
            batch,
            only,
            train,
            train_batches,
            train_workers,
            devices,
            train_steps,
        } => {
            let (device, replica_devices) = match &devices {
                Some(list) => {
                    let (_, replicas) = placement(backend, None, Some(list))?;
                    let crate::optim::Replicas::Devices(d) = replicas else {
                        unreachable!("a device list gives devices")
                    };
                    (d[0].clone(), Some(d))
                }
                None => (open(backend)?, None),
            };
            let device_name = describe(&device);
            eprintln!("backend: {device_name}");
            if train {
                crate::bench_train::run(crate::bench_train::TrainBenchArgs {
                    device,
                    device_name,
                    out: out.clone(),
                    teacher: teacher()?,
                    generator: bundled::find(bundled::GENERATOR, models_dir)?,
                    batches: train_batches,
                    workers: train_workers,
                    devices: replica_devices,
                    warmup: 2,
                    steps: train_steps,
                    only,
                })?;
                eprintln!("wrote {}", out.join("train.jsonl").display());
                return Ok(());
            }
            crate::bench::run(crate::bench::BenchArgs {
                device,
                device_name,
                out: out.clone(),
                quick,
                batch,
                teacher: teacher()?,
                generator: bundled::find(bundled::GENERATOR, models_dir)?,
                only,
            })?;
            eprintln!("wrote {}", out.join("bench.md").display());
            Ok(())
        }
        Command::Generate {
            prompt,
            seed,
            steps,
            guidance,
            shift,
            out,
            frames_dir,
            trajectory,
            checkpoint,
            backend,
            scale,
            fps,
        } => {
            let path = match checkpoint {
                Some(c) => c,
                None => match bundled::find(bundled::GENERATOR, models_dir) {
                    Ok(g) if steps == Some(1) => {
                        eprintln!(
                            "one step: the bundled one-step generator {} (pass --checkpoint {} for the teacher at one step)",
                            g.display(),
                            teacher()?.display()
                        );
                        g
                    }
                    _ => teacher()?,
                },
            };
            generate(
                &prompt,
                seed,
                steps,
                guidance,
                shift,
                &out,
                frames_dir.as_deref(),
                trajectory.as_deref(),
                &path,
                backend,
                scale,
                fps,
            )
        }
    }
}

/// A training run's main device and where its batch's shares run: the `--devices` list (wgpu
/// adapters, the first being the main device that steps the optimizer and holds the EMA) or
/// `--workers` threads on `backend`'s device.
fn placement(
    backend: BackendKind,
    workers: Option<usize>,
    devices: Option<&DeviceList>,
) -> anyhow::Result<(burn::tensor::Device, crate::optim::Replicas)> {
    let Some(list) = devices else {
        let device = open(backend)?;
        eprintln!("backend: {}", describe(&device));
        let workers = workers.unwrap_or_else(|| default_workers(backend));
        eprintln!("data-parallel workers: {workers}");
        return Ok((device, crate::optim::Replicas::threads(workers)));
    };
    // `--devices` names wgpu adapters, whatever `--backend` says (its default is the CPU).
    anyhow::ensure!(
        workers.is_none_or(|w| w == 1),
        "--devices and --workers > 1: with devices each one computes one share of the batch; give one of the two"
    );
    let opened = open_devices(list)?;
    for (i, (_, name)) in opened.iter().enumerate() {
        eprintln!(
            "device {i}: wgpu on {name}{}",
            if i == 0 {
                " (main: gradients summed here, optimizer, EMA, checkpoints)"
            } else {
                ""
            }
        );
    }
    let devices: Vec<burn::tensor::Device> = opened.into_iter().map(|(d, _)| d).collect();
    Ok((devices[0].clone(), crate::optim::Replicas::Devices(devices)))
}

/// Data-parallel training threads: every core on the CPU backend, one on a GPU.
fn default_workers(backend: BackendKind) -> usize {
    match backend {
        BackendKind::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        _ => 1,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn generate(
    prompt: &str,
    seed: u64,
    steps: Option<usize>,
    guidance: Option<f32>,
    shift: Option<f32>,
    out: &Path,
    frames_dir: Option<&Path>,
    trajectory: Option<&Path>,
    checkpoint: &Path,
    backend: BackendKind,
    scale: usize,
    fps: u32,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&scale),
        "--scale must be from 1 to 64, got {scale}"
    );
    if !checkpoint.exists() {
        anyhow::bail!(
            "checkpoint {} not found (pass --checkpoint FILE.safetensors)",
            checkpoint.display()
        );
    }
    let device = open(backend)?;
    eprintln!("backend: {}", describe(&device));
    let t0 = Instant::now();
    let mut generator = Generator::load(checkpoint, &device)?;
    if let Some(s) = shift {
        anyhow::ensure!(
            s > 0.0 && s.is_finite(),
            "--shift must be a positive number"
        );
        generator.shift = s;
    }
    let defaults = generator.defaults();
    let (steps, guidance) = (
        steps.unwrap_or(defaults.steps),
        guidance.unwrap_or(defaults.guidance),
    );
    flick_core::generate::check_sampling(steps, guidance)
        .map_err(|e| anyhow::anyhow!("--steps/--guidance: {e}"))?;
    eprintln!(
        "model: {} ({}, {} steps, guidance {guidance}) loaded in {:.2}s",
        checkpoint.display(),
        generator.info.kind,
        steps,
        t0.elapsed().as_secs_f32()
    );
    if let Some(w) = generator.prompt_warning(prompt) {
        eprintln!("warning: {w}");
    }
    let t1 = Instant::now();
    let video = generator.generate(prompt, seed, steps, guidance)?;
    eprintln!(
        "generated {}×{}×{} in {:.3}s",
        video.frames,
        video.height,
        video.width,
        t1.elapsed().as_secs_f32()
    );
    let video = if scale > 1 {
        video.upscale(scale)
    } else {
        video
    };
    video
        .write_gif(out, fps)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    if let Some(dir) = frames_dir {
        video.write_png_frames(dir)?;
        eprintln!("wrote frames to {}", dir.display());
    }
    if let Some(path) = trajectory {
        let all = generator.denoised_trajectory(prompt, seed, steps, guidance)?;
        let keep: Vec<usize> = if all.len() <= 13 {
            (0..all.len()).collect()
        } else {
            (0..13).map(|i| i * (all.len() - 1) / 12).collect()
        };
        let videos: Vec<_> = keep
            .iter()
            .map(|&i| flick_core::video::Video::from_clip(&all[i].1))
            .collect();
        flick_core::video::frame_grid(&videos, scale.max(2))
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        let ts: Vec<String> = keep.iter().map(|&i| format!("{:.3}", all[i].0)).collect();
        eprintln!(
            "wrote the x̂0 trajectory to {} (rows at t = {})",
            path.display(),
            ts.join(", ")
        );
    }
    Ok(())
}

/// The most training steps a command accepts (far beyond any run: a typo guard).
const MAX_TRAIN_STEPS: u64 = 100_000_000;

/// A clap parser for an integer in `lo..=hi`; clap's error names the flag, this says the range.
fn ranged<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |s: &str| match s.trim().parse::<T>() {
        Ok(v) if v >= lo && v <= hi => Ok(v),
        _ => Err(format!("expected a whole number from {lo} to {hi}")),
    }
}

fn ranged_u64(lo: u64, hi: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    ranged(lo, hi)
}
fn ranged_usize(
    lo: usize,
    hi: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    ranged(lo, hi)
}
fn ranged_u32(lo: u32, hi: u32) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync {
    ranged(lo, hi)
}

/// A real number in `lo..=hi` (NaN and infinities refused); `open_lo` excludes `lo`.
fn real(s: &str, lo: f64, hi: f64, open_lo: bool) -> Result<f64, String> {
    let range = if open_lo {
        format!("greater than {lo} and at most {hi}")
    } else {
        format!("from {lo} to {hi}")
    };
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v <= hi && (v > lo || (!open_lo && v == lo)) => Ok(v),
        _ => Err(format!("expected a number {range}")),
    }
}

/// `--guidance`: classifier-free guidance scale, 0 (unconditional) to [`MAX_GUIDANCE`].
fn guidance_scale(s: &str) -> Result<f32, String> {
    real(s, 0.0, MAX_GUIDANCE as f64, false).map(|v| v as f32)
}

/// `--shift`: sampling time shift, positive, at most 100.
fn time_shift(s: &str) -> Result<f32, String> {
    real(s, 0.0, 100.0, true).map(|v| v as f32)
}

/// `--time-budget`: seconds, positive, at most a year.
fn positive_seconds(s: &str) -> Result<f64, String> {
    real(s, 0.0, 365.0 * 86_400.0, true)
}

#[cfg(test)]
mod cli_tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_every_command_parses() {
        Cli::command().debug_assert();
        for args in [
            &[
                "flick",
                "eval",
                "--model",
                "t=models/teacher-small.safetensors@25",
            ][..],
            &[
                "flick",
                "eval",
                "--models",
                "models",
                "--probe",
                "p.safetensors",
            ],
            &[
                "flick",
                "generate",
                "--prompt",
                "a red circle",
                "--models",
                "models",
            ],
            &["flick", "--models", "models", "bench", "--quick"],
            &[
                "flick", "distill", "pairs", "--out", "runs/p", "--models", "models",
            ],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
