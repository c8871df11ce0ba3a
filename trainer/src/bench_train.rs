//! `flick bench --train`: Flick's whole training step and its one-step generation, timed the
//! way the PyTorch twin's `--bench` times them (`scripts/torch_twin/bench.py`), so that
//! `scripts/bench-train.sh` can put both in one table.
//!
//! A training step is what `flick train-teacher` does per step, minus making the batch (that
//! runs ahead on its own thread there): text encoding, forward, flow-matching loss and backward
//! over `workers` data-parallel workers, the global-norm clip, AdamW and the EMA update. One-step
//! generation is `Generator::generate_videos` with one step and no guidance (noise, text,
//! network, clips read back as pixels).
//!
//! Protocol (the same in the twin): the same batch every step, `warmup` untimed steps, then
//! `steps` timed ones, each ending with the device idle (`Device::sync`); the median is reported
//! with the fastest. Nothing here is compared across runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::prelude::*;
use flick_core::generate::Generator;
use flick_core::model::Backbone;

use crate::optim::Replicas;
use serde::Serialize;

pub struct TrainBenchArgs {
    pub device: Device,
    pub device_name: String,
    pub out: PathBuf,
    pub teacher: PathBuf,
    pub generator: PathBuf,
    pub batches: Vec<usize>,
    pub workers: Vec<usize>,
    /// Instead of `workers`: devices for the data-parallel step (the first is the main device,
    /// `device`); measured on the first alone, then on all of them, at the same global batch.
    pub devices: Option<Vec<Device>>,
    pub warmup: usize,
    pub steps: usize,
    /// Run only the parts whose name contains one of these (`training step`, `training loop`
    /// (measured with the training step; by default on a GPU only), `op:` (or one operation's
    /// name, e.g. `op: conv`),
    /// `optimizer`, `one-step generation`); all when empty.
    pub only: Vec<String>,
}

/// One measured configuration (a line of `train.jsonl`; the twin writes the same fields).
#[derive(Serialize, Debug)]
pub struct TrainRow {
    pub framework: String,
    pub device: String,
    /// `training step` or `one-step generation`
    pub what: String,
    pub batch: usize,
    /// Flick's data-parallel workers, or devices with `--devices` (1 for PyTorch)
    pub workers: usize,
    /// With `--devices`: how many devices shared the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
    /// With `--devices`: median time per step moving the gradients to the main device (the
    /// host-staged transfers, waiting for the replicas included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_ms: Option<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub clips_per_s: f64,
    pub steps: usize,
    /// Mean loss over the timed steps (a check that both sides trained the same thing).
    pub loss: Option<f64>,
}

/// The prompts of the benchmark batch: captions of the training data's kind, every tenth empty
/// (the caption dropout's unconditional input).
pub fn prompts(n: usize) -> Vec<String> {
    const CAPTIONS: [&str; 4] = [
        "a large red circle moving left on black",
        "a small yellow square moving up on navy",
        "a large cyan triangle orbiting clockwise on gray",
        "a large white cross falling on dark green",
    ];
    (0..n)
        .map(|i| {
            if i % 10 == 9 {
                String::new()
            } else {
                CAPTIONS[i % 4].to_string()
            }
        })
        .collect()
}

fn time_steps(
    device: &Device,
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> f32,
) -> (f64, f64, f64) {
    for _ in 0..warmup {
        step();
        device.sync().expect("device sync");
    }
    let mut times = Vec::with_capacity(steps);
    let mut loss = 0f64;
    for _ in 0..steps {
        let t0 = Instant::now();
        loss += step() as f64;
        device.sync().expect("device sync");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times[0], loss / steps.max(1) as f64)
}

pub fn run(args: TrainBenchArgs) -> anyhow::Result<Vec<TrainRow>> {
    let TrainBenchArgs {
        device,
        device_name,
        out,
        teacher,
        generator,
        batches,
        workers,
        devices,
        warmup,
        steps,
        only,
    } = args;
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    anyhow::ensure!(steps >= 1, "--steps must be ≥ 1");
    std::fs::create_dir_all(&out)?;
    let jsonl = out.join("train.jsonl");
    let mut rows = Vec::new();
    let ad = device.clone().autodiff();
    // burn's kernel fusion (compiled into the wgpu backend) can be switched off for a process
    // by capping its explorations at zero: every queued operation then runs as its own kernel.
    // The rows say which was measured.
    let fusion_off = device.identity().is_some()
        && std::env::var("BURN_FUSION_MAX_EXPLORATIONS").is_ok_and(|v| v.trim() == "0");
    // `--no-fused`: burn's own operations where Flick has its own (kernels on a GPU; the
    // convolution and attention on the CPU), for before/after rows in one table.
    let label = |fused: bool| match (fused, fusion_off) {
        (true, false) => "flick",
        (true, true) => "flick (burn fusion off)",
        (false, false) => "flick (burn's operations)",
        (false, true) => "flick (burn's operations, burn fusion off)",
    };
    let flick = label(flick_core::shaders::fused());

    for &b in batches
        .iter()
        .filter(|_| wanted("training step") || wanted("training loop"))
    {
        anyhow::ensure!(b >= 1, "batch sizes must be ≥ 1");
        let placements: Vec<(usize, Replicas)> = match &devices {
            Some(list) => vec![
                (1, Replicas::Devices(list[..1].to_vec())),
                (list.len(), Replicas::Devices(list.clone())),
            ],
            None => workers.iter().map(|&w| (w, Replicas::threads(w))).collect(),
        };
        for (w, replicas) in &placements {
            let w = *w;
            let (model, info): (Backbone, _) = flick_core::checkpoint::load_model(&teacher, &ad)
                .with_context(|| format!("loading {}", teacher.display()))?;
            let cfg = info.config.clone();
            let mut ema = Some(model.valid());
            // Moved through each step as the training loop moves it (no second owner keeps the
            // old weights alive).
            let mut model = Some(model);
            let mut optim = crate::optim::AdamW::new(0.9, 0.99, 1e-8, 0.0);
            let sizes = cfg.level_sizes();
            // A fixed batch: clips in [-1, 1], one noise tensor per resolution, spread times.
            device.seed(7);
            let shape = [b, 3, cfg.frames, cfg.height, cfg.width];
            let x0: Vec<f32> = Tensor::<5>::random(
                shape,
                burn::tensor::Distribution::Uniform(-1.0, 1.0),
                &device,
            )
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let eps: Vec<Vec<f32>> = sizes
                .iter()
                .map(|&[h, wd]| {
                    Tensor::<5>::random(
                        [b, 3, cfg.frames, h, wd],
                        burn::tensor::Distribution::Normal(0.0, 1.0),
                        &device,
                    )
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32")
                })
                .collect();
            let times: Vec<f32> = (0..b).map(|i| (i as f32 + 0.5) / b as f32).collect();
            let prompts = prompts(b);
            let per = |r: usize| 3 * cfg.frames * sizes[r][0] * sizes[r][1];
            let shares = replicas.shares(&ad);
            let mut transfers = Vec::new();
            // One step as `flick train-teacher` issues it: nothing read back (the loss and the
            // update's outcome queued in `unread`); `read_mid` reads the loss before the update
            // is issued, as the training loop did until 2026-12-03.
            let mut one_step = |unread: &mut crate::optim::Unread<()>, read_mid: bool| {
                let (loss, grads) = crate::optim::data_parallel_grads_unread(
                    model.as_ref().expect("model"),
                    b,
                    &shares,
                    |local, lo, hi, dev| {
                        let ad = dev.clone();
                        let n = hi - lo;
                        let x = Tensor::<5>::from_data(
                            TensorData::new(
                                x0[lo * per(0)..hi * per(0)].to_vec(),
                                [n, 3, cfg.frames, cfg.height, cfg.width],
                            ),
                            &ad,
                        );
                        let e = (0..sizes.len())
                            .map(|r| {
                                Tensor::<5>::from_data(
                                    TensorData::new(
                                        eps[r][lo * per(r)..hi * per(r)].to_vec(),
                                        [n, 3, cfg.frames, sizes[r][0], sizes[r][1]],
                                    ),
                                    &ad,
                                )
                            })
                            .collect();
                        let t = Tensor::<1>::from_data(
                            TensorData::new(times[lo..hi].to_vec(), [n]),
                            &ad,
                        );
                        let text = local.encode_text(&prompts[lo..hi], &ad);
                        local.flow_loss(x, e, t, &text)
                    },
                );
                transfers.push(
                    crate::optim::TRANSFER_NANOS.load(std::sync::atomic::Ordering::Relaxed) as f64
                        / 1e6,
                );
                if read_mid {
                    let _: f32 = loss.clone().into_scalar();
                }
                let (m, e, update) = optim.update(
                    model.take().expect("model"),
                    Some((ema.take().expect("ema"), 0.999)),
                    &grads,
                    5e-4,
                    1.0,
                    Some(loss.clone()),
                );
                (model, ema) = (Some(m), e);
                unread.push((), loss, update);
            };
            let mut unread = crate::optim::Unread::default();
            // The benchmark's step: issued, then its loss and outcome read (one read-back).
            let (median, min, loss) = time_steps(&device, warmup, steps, || {
                one_step(&mut unread, false);
                unread.read()[0].1
            });
            // A run of steps: read after each step's backward and after its update (two
            // read-backs a step, the loop until 2026-12-03), against read once at the end, as
            // `flick train-teacher` reads between its log lines.
            // (By default on a GPU only: flex computes each operation as it is issued, so there
            // is no queue to keep full.)
            let loops_here = if only.is_empty() {
                device.identity().is_some()
            } else {
                wanted("training loop")
            };
            let loops: Vec<(&str, f64)> = if loops_here {
                [("read twice a step", true), ("read once per run", false)]
                    .into_iter()
                    .map(|(name, each)| {
                        device.sync().expect("device sync");
                        let t0 = Instant::now();
                        for _ in 0..steps {
                            one_step(&mut unread, each);
                            if each {
                                unread.read();
                            }
                        }
                        unread.read();
                        device.sync().expect("device sync");
                        (name, t0.elapsed().as_secs_f64() * 1e3 / steps as f64)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let row = TrainRow {
                framework: flick.into(),
                device: device_name.clone(),
                what: "training step".into(),
                batch: b,
                workers: w,
                median_ms: median,
                min_ms: min,
                clips_per_s: b as f64 / (median / 1e3),
                steps,
                loss: Some(loss),
                devices: devices.as_ref().map(|_| w),
                transfer_ms: devices.as_ref().map(|_| {
                    let mut t = transfers[transfers.len().saturating_sub(steps)..].to_vec();
                    t.sort_by(|a, b| a.total_cmp(b));
                    t[t.len() / 2]
                }),
            };
            let unit = if devices.is_some() {
                "device(s)"
            } else {
                "worker(s)"
            };
            eprintln!(
                "training step, batch {b}, {w} {unit}: {median:.0} ms (fastest {min:.0}), {:.1} clips/s, loss {loss:.4}{}",
                row.clips_per_s,
                row.transfer_ms
                    .map_or(String::new(), |t| format!(", gradient transfer {t:.1} ms"))
            );
            append(&jsonl, &row)?;
            rows.push(row);
            for (name, ms) in loops {
                eprintln!(
                    "training loop, batch {b}, {w} {unit}, {name}: {ms:.0} ms a step over {steps} steps, {:.1} clips/s",
                    b as f64 / (ms / 1e3)
                );
                let row = TrainRow {
                    framework: flick.into(),
                    device: device_name.clone(),
                    what: format!("training loop, {name}"),
                    batch: b,
                    workers: w,
                    median_ms: ms,
                    min_ms: ms,
                    clips_per_s: b as f64 / (ms / 1e3),
                    steps,
                    loss: None,
                    devices: devices.as_ref().map(|_| w),
                    transfer_ms: None,
                };
                append(&jsonl, &row)?;
                rows.push(row);
            }
        }
    }

    // What a replica costs on the wire each step: the gradients (one flat f32 tensor of the
    // teacher's parameter count) from the second device to the main one, and the weights the
    // other way (the replica forked there), each after both devices are idle.
    if let Some(list) = devices
        .as_ref()
        .filter(|l| l.len() > 1 && wanted("transfer"))
    {
        let (model, _): (Backbone, _) = flick_core::checkpoint::load_model(&teacher, &ad)?;
        let n = flick_core::params::count(&model);
        let (main, other) = (&list[0], &list[1]);
        let mb = n as f64 * 4.0 / 1e6;
        let mut row = |what: &str, mut once: Box<dyn FnMut()>| -> anyhow::Result<()> {
            let (median, min, _) = time_steps(main, warmup, steps.max(5), || {
                once();
                0.0
            });
            eprintln!(
                "{what}: {mb:.1} MB in {median:.1} ms (fastest {min:.1}), {:.2} GB/s",
                mb / median
            );
            let row = TrainRow {
                framework: flick.into(),
                device: device_name.clone(),
                what: what.into(),
                batch: 0,
                workers: list.len(),
                median_ms: median,
                min_ms: min,
                clips_per_s: 0.0,
                steps: steps.max(5),
                loss: None,
                devices: Some(list.len()),
                transfer_ms: Some(median),
            };
            append(&jsonl, &row)?;
            rows.push(row);
            Ok(())
        };
        let grads = Tensor::<1>::random([n], burn::tensor::Distribution::Normal(0.0, 1.0), other);
        other.sync().expect("device sync");
        row(
            "transfer: gradients to the main device",
            Box::new(|| {
                // Read on `other`, written on `main`; `time_steps` waits for `main`.
                let _moved = grads.clone().to_device(main);
            }),
        )?;
        let weights = model.valid();
        row(
            "transfer: weights to a replica",
            Box::new(|| {
                let copy = crate::optim::move_flat(&weights, other);
                other.sync().expect("device sync");
                drop(copy);
            }),
        )?;
    }

    // The step's operations one by one at batch 16's shapes, forward + backward of
    // Σ y·y with one factor not differentiated (the output's gradient is y, for one multiply
    // and one sum; burn's CPU sine alone cost more than some of the ops): the same list and
    // loss as the twin's `ops`.
    // Where Flick has its own CPU operation (convolution, attention, group norm, GELU, SiLU), twice: Flick's (the
    // model's path) and burn's own (`--no-fused`).
    // (`--only op:` runs them all, `--only "op: conv"` the convolutions.)
    const OP_NAMES: [&str; 8] = [
        "linear [4096,128]→512",
        "attention [16,4,256,32]",
        "adaLN [16,256,128]",
        "conv 3→16 3×3×3 [16,3,8,32,32]",
        "conv 16→16 1×3×3 [16,16,8,32,32]",
        "group norm [16,16,8,32,32]",
        "GELU [16,256,512]",
        "SiLU [16,16,8,32,32]",
    ];
    let op_wanted = |name: &str| wanted(&format!("op: {name}"));
    if OP_NAMES.iter().any(|name| op_wanted(name)) {
        use flick_core::shaders;
        let b = 16usize;
        fn leaf<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
            Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), device)
                .require_grad()
        }
        let lin = burn::nn::LinearConfig::new(128, 512).init(&ad);
        let x = leaf([b * 256, 128], &ad);
        let (q, k, v) = (
            leaf([b, 4, 256, 32], &ad),
            leaf([b, 4, 256, 32], &ad),
            leaf([b, 4, 256, 32], &ad),
        );
        let (t, sh, sc) = (
            leaf([b, 256, 128], &ad),
            leaf([b, 128], &ad),
            leaf([b, 128], &ad),
        );
        let stem = burn::nn::conv::Conv3dConfig::new([3, 16], [3, 3, 3])
            .with_padding(burn::nn::PaddingConfig3d::Explicit(1, 1, 1))
            .init(&ad);
        let clip = leaf([b, 3, 8, 32, 32], &ad);
        let conv = burn::nn::conv::Conv3dConfig::new([16, 16], [1, 3, 3])
            .with_padding(burn::nn::PaddingConfig3d::Explicit(0, 1, 1))
            .init(&ad);
        let feat = leaf([b, 16, 8, 32, 32], &ad);
        let hidden = leaf([b, 256, 512], &ad);
        fn loss<const D: usize>(y: Tensor<D>) -> f32 {
            let _ = (y.clone() * y.detach()).sum().backward();
            0.0
        }
        // (name, whether Flick has an implementation of its own here — then burn's operation
        // is timed too, as `--no-fused` runs it —, forward + backward)
        type Op<'a> = (&'a str, bool, Box<dyn Fn() -> f32 + 'a>);
        let [
            lin_name,
            attn_name,
            adaln_name,
            stem_name,
            conv_name,
            gn_name,
            gelu_name,
            silu_name,
        ] = OP_NAMES;
        let ops: Vec<Op> = vec![
            (lin_name, false, Box::new(|| loss(lin.forward(x.clone())))),
            (
                attn_name,
                true,
                Box::new(|| loss(shaders::attention(q.clone(), k.clone(), v.clone(), None))),
            ),
            (
                adaln_name,
                false,
                Box::new(|| loss(shaders::adaln(t.clone(), sh.clone(), sc.clone()))),
            ),
            (
                stem_name,
                true,
                Box::new(|| loss(flick_core::model::layers::conv3d(&stem, clip.clone()))),
            ),
            (
                conv_name,
                true,
                Box::new(|| loss(flick_core::model::layers::conv3d(&conv, feat.clone()))),
            ),
            (
                gn_name,
                true,
                Box::new(|| loss(flick_core::model::layers::group_norm(feat.clone(), 8))),
            ),
            (
                gelu_name,
                true,
                Box::new(|| loss(shaders::gelu(hidden.clone()))),
            ),
            (
                silu_name,
                true,
                Box::new(|| loss(shaders::silu(feat.clone()))),
            ),
        ];
        let was = shaders::fused();
        let runs = ops
            .iter()
            .filter(|(name, ..)| op_wanted(name))
            .flat_map(|(name, own, op)| {
                let both: &[bool] = match (was, *own) {
                    (true, true) => &[true, false],
                    (true, false) => &[true],
                    (false, _) => &[false],
                };
                both.iter().map(move |&fused| (*name, fused, op))
            });
        for (name, fused, op) in runs {
            shaders::set_fused(fused);
            let (median, min, _) = time_steps(&device, warmup, steps, op);
            shaders::set_fused(was);
            let framework = label(fused).to_string();
            eprintln!("op: {name}, {framework}: {median:.1} ms (fastest {min:.1})");
            let row = TrainRow {
                framework,
                device: device_name.clone(),
                what: format!("op: {name}"),
                batch: b,
                workers: 1,
                median_ms: median,
                min_ms: min,
                clips_per_s: 0.0,
                steps,
                loss: None,
                devices: None,
                transfer_ms: None,
            };
            append(&jsonl, &row)?;
            rows.push(row);
        }
    }

    // The update alone (the teacher's parameters, fixed gradients): fused, and as tensor ops.
    for unfused in [false, true].into_iter().filter(|_| wanted("optimizer")) {
        let (model, _): (Backbone, _) = flick_core::checkpoint::load_model(&teacher, &ad)?;
        let mut grads = std::collections::HashMap::new();
        flick_core::params::visit_params(&model, |path, _, v, _| {
            grads.insert(
                path.to_string(),
                Tensor::<1>::random(
                    v.dims(),
                    burn::tensor::Distribution::Normal(0.0, 1e-3),
                    &device,
                ),
            );
        });
        let mut ema = Some(model.valid());
        let mut model = Some(model);
        let mut optim = crate::optim::AdamW::new(0.9, 0.99, 1e-8, 0.0);
        optim.unfused = unfused;
        let (median, min, _) = time_steps(&device, warmup, steps, || {
            let (m, e, _) = optim.update(
                model.take().expect("model"),
                Some((ema.take().expect("ema"), 0.999)),
                &grads,
                5e-4,
                1.0,
                None,
            );
            (model, ema) = (Some(m), e);
            0.0
        });
        let framework = match (unfused, device.identity().is_none()) {
            (true, _) => "flick (tensor ops",
            (false, true) => "flick (fused CPU update",
            (false, false) => "flick (fused kernel",
        };
        let framework = format!(
            "{framework}{})",
            if fusion_off { ", burn fusion off" } else { "" }
        );
        let row = TrainRow {
            framework,
            device: device_name.clone(),
            what: "optimizer + EMA update".into(),
            batch: 0,
            workers: 1,
            median_ms: median,
            min_ms: min,
            clips_per_s: 0.0,
            steps,
            loss: None,
            devices: None,
            transfer_ms: None,
        };
        eprintln!("{}: {median:.1} ms (fastest {min:.1})", row.framework);
        append(&jsonl, &row)?;
        rows.push(row);
    }

    if wanted("one-step generation") {
        let g = Generator::load(&generator, &device)
            .with_context(|| format!("loading {}", generator.display()))?;
        for n in [1usize, 16] {
            let prompts = prompts(n);
            let seeds: Vec<u64> = (0..n as u64).collect();
            let (median, min, _) = time_steps(&device, warmup.max(1), steps, || {
                g.generate_videos(&prompts, &seeds, 1, 1.0, |_, _| {})
                    .expect("one-step generation");
                0.0
            });
            let row = TrainRow {
                framework: flick.into(),
                device: device_name.clone(),
                what: "one-step generation".into(),
                batch: n,
                workers: 1,
                median_ms: median,
                min_ms: min,
                clips_per_s: n as f64 / (median / 1e3),
                steps,
                loss: None,
                devices: None,
                transfer_ms: None,
            };
            eprintln!("one-step generation of {n} clip(s): {median:.1} ms (fastest {min:.1})");
            append(&jsonl, &row)?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn append(path: &Path, row: &TrainRow) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(row)?)?;
    Ok(())
}
