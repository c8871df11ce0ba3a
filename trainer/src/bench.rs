//! `flick bench`: Flick's fused kernels against burn's composed operations (and burn's own
//! attention) on the same device, measured side by side in one run with criterion, plus the
//! model-level comparisons (one-step generation and a training step with the kernels on and
//! off, one step against the teacher's 25). Writes `bench.md` (the table: times, speed-ups,
//! achieved GFLOP/s and GB/s) and `bench.json`; criterion's own reports land beside them.
//!
//! Speed-ups are ratios of criterion's mean times measured in this run on this device; nothing
//! is compared across runs or machines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::Criterion;
use flick_core::generate::Generator;
use flick_core::model::Backbone;
use flick_core::shaders;
use serde::Serialize;

/// What one benchmark pair measured.
#[derive(Serialize, Debug)]
pub struct Row {
    pub name: String,
    pub shape: String,
    /// Mean seconds with the kernels (or the fast side of the pair).
    pub fused_s: f64,
    /// Mean seconds with burn's composed operations (or the slow side).
    pub composed_s: f64,
    /// composed / fused.
    pub speedup: f64,
    /// Floating-point operations of one call (for GFLOP/s), if meaningful.
    pub flops: Option<f64>,
    /// Bytes one call must at least read and write (for GB/s), if meaningful.
    pub bytes: Option<f64>,
    /// What the two sides are.
    pub sides: (String, String),
}

pub struct BenchArgs {
    pub device: Device,
    pub device_name: String,
    pub out: PathBuf,
    /// Shorter measurement (for slow devices and smoke tests).
    pub quick: bool,
    /// Batch of the training-step benchmark and of the kernel shapes.
    pub batch: usize,
    pub teacher: PathBuf,
    pub generator: PathBuf,
    /// Run only the benchmarks whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

fn criterion(out: &Path, quick: bool) -> Criterion {
    let c = Criterion::default().output_directory(out).without_plots();
    if quick {
        c.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
    } else {
        c.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
    }
}

/// Mean time (s) criterion measured for `group/function`.
fn mean_seconds(out: &Path, group: &str, function: &str) -> anyhow::Result<f64> {
    let path = out.join(group).join(function).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("criterion wrote no {}", path.display()))?,
    )?;
    Ok(v["mean"]["point_estimate"]
        .as_f64()
        .context("no mean in criterion's estimates")?
        * 1e-9)
}

/// Run `fast` and `slow` as one criterion group and return the row. Each iteration waits for
/// the device.
#[allow(clippy::too_many_arguments)]
fn pair(
    c: &mut Criterion,
    out: &Path,
    device: &Device,
    name: &str,
    shape: String,
    sides: (&str, &str),
    flops: Option<f64>,
    bytes: Option<f64>,
    mut fast: impl FnMut(),
    mut slow: impl FnMut(),
) -> anyhow::Result<Option<Row>> {
    if !ONLY.with(|only| {
        let only = only.borrow();
        only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
    }) {
        return Ok(None);
    }
    // Criterion sanitises directory names: keep to letters, digits and underscores.
    let group_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    {
        let mut group = c.benchmark_group(&group_name);
        if LONG.with(|l| l.get()) {
            // Whole-model rows (~0.1 s per iteration on an H200): 10 samples in a second made the
            // training step's ratio swing by 30 % between runs.
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(8));
        }
        group.bench_function("a", |b| {
            b.iter(|| {
                fast();
                device.sync().expect("device sync");
            })
        });
        group.bench_function("b", |b| {
            b.iter(|| {
                slow();
                device.sync().expect("device sync");
            })
        });
        group.finish();
    }
    let (f, s) = (
        mean_seconds(out, &group_name, "a")?,
        mean_seconds(out, &group_name, "b")?,
    );
    let row = Row {
        name: name.into(),
        shape,
        fused_s: f,
        composed_s: s,
        speedup: s / f,
        flops,
        bytes,
        sides: (sides.0.into(), sides.1.into()),
    };
    eprintln!(
        "bench {name}: {} {:.3} ms, {} {:.3} ms: ×{:.2}",
        sides.0,
        f * 1e3,
        sides.1,
        s * 1e3,
        row.speedup
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.parent().unwrap_or(out).join("bench.partial.jsonl"))
    {
        use std::io::Write;
        let _ = writeln!(f, "{}", serde_json::to_string(&row).unwrap_or_default());
    }
    Ok(Some(row))
}

thread_local! {
    /// `BenchArgs::only` for [`pair`].
    static ONLY: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Measure longer (the whole-model rows).
    static LONG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Run the kernel with the fused path on, then with it off.
fn switched<T>(on: bool, f: impl FnOnce() -> T) -> T {
    shaders::set_fused(on);
    let out = f();
    shaders::set_fused(true);
    out
}

pub fn run(args: BenchArgs) -> anyhow::Result<Vec<Row>> {
    let BenchArgs {
        device,
        device_name,
        out,
        quick,
        batch,
        teacher,
        generator,
        only,
    } = args;
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    ONLY.with(|o| *o.borrow_mut() = only.clone());
    std::fs::create_dir_all(&out)?;
    let _ = std::fs::remove_file(out.join("bench.partial.jsonl"));
    let crit_dir = out.join("criterion");
    let mut c = criterion(&crit_dir, quick);
    let mut rows = Vec::new();
    let fo = ("fused kernel", "burn composed");

    // The small model's shapes: 256 tokens of width 128 in 4 heads of 32; 96 text tokens.
    let (b, h, n, dh, m) = (batch, 4usize, 256usize, 32usize, 96usize);
    let (q, k, v) = (
        random([b, h, n, dh], &device),
        random([b, h, n, dh], &device),
        random([b, h, n, dh], &device),
    );
    let flops = |nq: usize, nk: usize| 4.0 * (b * h * nq * nk * dh) as f64;
    let io = |nq: usize, nk: usize| 4.0 * (b * h * (2 * nq + 2 * nk) * dh) as f64;
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "attention forward (self)",
        format!("[{b},{h},{n},{dh}]²"),
        fo,
        Some(flops(n, n)),
        Some(io(n, n)),
        || {
            switched(true, || {
                shaders::attention(q.clone(), k.clone(), v.clone(), None)
            });
        },
        || {
            switched(false, || {
                shaders::attention(q.clone(), k.clone(), v.clone(), None)
            });
        },
    )?);
    // One clip (what the viewer generates): few workgroups unless rows are split.
    let (q1, k1, v1) = (
        random([1, h, n, dh], &device),
        random([1, h, n, dh], &device),
        random([1, h, n, dh], &device),
    );
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "attention forward (self, one clip)",
        format!("[1,{h},{n},{dh}]²"),
        fo,
        Some(flops(n, n) / b as f64),
        Some(io(n, n) / b as f64),
        || {
            switched(true, || {
                shaders::attention(q1.clone(), k1.clone(), v1.clone(), None)
            });
        },
        || {
            switched(false, || {
                shaders::attention(q1.clone(), k1.clone(), v1.clone(), None)
            });
        },
    )?);
    let (kc, vc) = (
        random([b, h, m, dh], &device),
        random([b, h, m, dh], &device),
    );
    let bias = Tensor::<2>::zeros([b, m], &device)
        .slice_assign([0..b, 40..m], Tensor::full([b, m - 40], -1e4, &device));
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "attention forward (cross, padded)",
        format!("[{b},{h},{n}|{m},{dh}]"),
        fo,
        Some(flops(n, m)),
        Some(io(n, m)),
        || {
            switched(true, || {
                shaders::attention(q.clone(), kc.clone(), vc.clone(), Some(bias.clone()))
            });
        },
        || {
            switched(false, || {
                shaders::attention(q.clone(), kc.clone(), vc.clone(), Some(bias.clone()))
            });
        },
    )?);

    let ad = device.clone().autodiff();
    let (qa, ka, va, ga) = (
        random([b, h, n, dh], &ad).require_grad(),
        random([b, h, n, dh], &ad).require_grad(),
        random([b, h, n, dh], &ad).require_grad(),
        random([b, h, n, dh], &ad),
    );
    let attn_train = |on: bool| {
        switched(on, || {
            let o = shaders::attention(qa.clone(), ka.clone(), va.clone(), None);
            let grads = (o * ga.clone()).sum().backward();
            let _ = qa.grad(&grads);
        })
    };
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "attention forward+backward (self)",
        format!("[{b},{h},{n},{dh}]²"),
        fo,
        Some(3.5 * flops(n, n)),
        Some(2.5 * io(n, n)),
        || attn_train(true),
        || attn_train(false),
    )?);

    let d = h * dh;
    let (x, shift, scale) = (
        random([b, n, d], &device),
        random([b, d], &device),
        random([b, d], &device),
    );
    let adaln_bytes = 4.0 * (2 * b * n * d) as f64;
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "adaLN forward",
        format!("[{b},{n},{d}]"),
        fo,
        Some(8.0 * (b * n * d) as f64),
        Some(adaln_bytes),
        || {
            switched(true, || {
                shaders::adaln(x.clone(), shift.clone(), scale.clone())
            });
        },
        || {
            switched(false, || {
                shaders::adaln(x.clone(), shift.clone(), scale.clone())
            });
        },
    )?);
    let (xa, sha, sca, gy) = (
        random([b, n, d], &ad).require_grad(),
        random([b, d], &ad).require_grad(),
        random([b, d], &ad).require_grad(),
        random([b, n, d], &ad),
    );
    let adaln_train = |on: bool| {
        switched(on, || {
            let y = shaders::adaln(xa.clone(), sha.clone(), sca.clone());
            let grads = (y * gy.clone()).sum().backward();
            let _ = xa.grad(&grads);
        })
    };
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "adaLN forward+backward",
        format!("[{b},{n},{d}]"),
        fo,
        None,
        Some(2.5 * adaln_bytes),
        || adaln_train(true),
        || adaln_train(false),
    )?);

    // The DiT's pixel-resolution convolutions (the head's 32 → 16 1×3×3, the stem's 3 → 16
    // 3×3×3) and the video U-Net's per-frame 1×3×3 convolutions at each level of
    // `configs/teacher-unet.toml` (32 channels at 32×32, 64 at 16×16, 128 at 8×8): the shapes
    // that decide where Flick's convolution kernel should run and where burn's should.
    for (label, ci, co, kt, hw) in [
        ("head 1×3×3, 32→16", 32usize, 16usize, 1usize, 32usize),
        ("stem 3×3×3, 3→16", 3, 16, 3, 32),
        ("U-Net level 1×3×3, 32→32 at 32×32", 32, 32, 1, 32),
        ("U-Net level 1×3×3, 64→64 at 16×16", 64, 64, 1, 16),
        ("U-Net bottleneck 1×3×3, 128→128 at 8×8", 128, 128, 1, 8),
    ] {
        let t = 8usize;
        let x = random([b, ci, t, hw, hw], &device);
        let w = random([co, ci, kt, 3, 3], &device);
        let bias = random([co], &device);
        let flops = 2.0 * (b * co * t * hw * hw * ci * kt * 9) as f64;
        let bytes = 4.0 * (b * (ci + co) * t * hw * hw) as f64;
        rows.extend(pair(
            &mut c,
            &crit_dir,
            &device,
            &format!("conv forward ({label})"),
            format!("[{b},{ci},{t},{hw},{hw}]"),
            fo,
            Some(flops),
            Some(bytes),
            || {
                switched(true, || {
                    shaders::conv3d(x.clone(), w.clone(), Some(bias.clone()))
                });
            },
            || {
                switched(false, || {
                    shaders::conv3d(x.clone(), w.clone(), Some(bias.clone()))
                });
            },
        )?);
        let (xa, wa, ba, gy) = (
            random([b, ci, t, hw, hw], &ad).require_grad(),
            random([co, ci, kt, 3, 3], &ad).require_grad(),
            random([co], &ad).require_grad(),
            random([b, co, t, hw, hw], &ad),
        );
        let conv_train = |on: bool| {
            switched(on, || {
                let y = shaders::conv3d(xa.clone(), wa.clone(), Some(ba.clone()));
                let grads = (y * gy.clone()).sum().backward();
                let _ = (xa.grad(&grads), wa.grad(&grads));
            })
        };
        rows.extend(pair(
            &mut c,
            &crit_dir,
            &device,
            &format!("conv forward+backward ({label})"),
            format!("[{b},{ci},{t},{hw},{hw}]"),
            fo,
            Some(3.0 * flops),
            Some(3.0 * bytes),
            || conv_train(true),
            || conv_train(false),
        )?);
    }

    let clips = random([4, 3, 8, 32, 32], &device);
    rows.extend(pair(
        &mut c,
        &crit_dir,
        &device,
        "clip → RGBA8 frames (incl. read-back)",
        "[4,3,8,32,32]".into(),
        ("GPU kernel + packed read", "f32 read + CPU"),
        None,
        Some(4.0 * 4.0 * 3.0 * 8192.0),
        || {
            switched(true, || {
                shaders::clip_pixels(clips.clone()).expect("reading clips back")
            });
        },
        || {
            switched(false, || {
                shaders::clip_pixels(clips.clone()).expect("reading clips back")
            });
        },
    )?);

    // The model: one-step generation (bundled generator, 4 seeds) and a training step.
    if [
        "one-step generation",
        "engines",
        "training step",
        "one clip",
    ]
    .iter()
    .any(|n| wanted(n))
    {
        LONG.with(|l| l.set(true));
        let g = Generator::load(&generator, &device).context("loading the one-step generator")?;
        let prompts: Vec<String> = (0..4)
            .map(|_| "a large red circle moving left on black".to_string())
            .collect();
        let seeds = [1u64, 2, 3, 4];
        // Once with errors reported (the closures below run inside criterion, which cannot
        // return them).
        g.generate_videos(&prompts, &seeds, 1, 1.0, |_, _| {})
            .context("one-step generation")?;
        let one_step = |on: bool| {
            switched(on, || {
                g.generate_videos(&prompts, &seeds, 1, 1.0, |_, _| {})
                    .expect("generation");
            })
        };
        rows.extend(pair(
            &mut c,
            &crit_dir,
            &device,
            "one-step generation (4 clips, incl. read-back)",
            "4×[3,8,32,32]".into(),
            fo,
            None,
            None,
            || one_step(true),
            || one_step(false),
        )?);

        // The browser's WebGPU engine (flick-direct: Flick's kernels through wgpu, no burn) on
        // its own device of the same adapter, against burn's engine with Flick's kernels.
        if shaders::on_gpu(&device) {
            let gpu = std::rc::Rc::new(
                pollster::block_on(flick_direct::Gpu::open(
                    flick_direct::wgpu::Backends::PRIMARY,
                ))
                .map_err(anyhow::Error::msg)
                .context("opening a device for flick-direct")?,
            );
            let bytes = std::fs::read(&generator)
                .with_context(|| format!("reading {}", generator.display()))?;
            let direct = flick_direct::Generator::from_bytes(&bytes, &gpu)
                .map_err(anyhow::Error::msg)
                .context("loading the one-step generator into flick-direct")?;
            let run_direct = || {
                pollster::block_on(direct.generate_videos_async(
                    &prompts,
                    &seeds,
                    1,
                    1.0,
                    |_, _| {},
                ))
            };
            run_direct()
                .map_err(anyhow::Error::msg)
                .context("one-step generation with flick-direct")?;
            rows.extend(pair(
                &mut c,
                &crit_dir,
                &device,
                "one-step generation (4 clips, incl. read-back), engines",
                "4×[3,8,32,32]".into(),
                ("flick-direct", "burn + kernels"),
                None,
                None,
                || {
                    run_direct().expect("generation");
                },
                || one_step(true),
            )?);
        }

        let t = Generator::load(&teacher, &device).context("loading the teacher")?;
        let cfg = t.info.config.clone();
        // The teacher's weights as trainable parameters (autodiff leaves on this device).
        let (train_model, _): (Backbone, _) = flick_core::checkpoint::load_model(&teacher, &ad)
            .context("loading the teacher for training")?;
        let tb = batch;
        let shape = [tb, 3, cfg.frames, cfg.height, cfg.width];
        let (x0, target) = (random(shape, &ad), random(shape, &ad));
        let times = Tensor::<1>::from_floats(
            &(0..tb)
                .map(|i| (i as f32 + 0.5) / tb as f32)
                .collect::<Vec<_>>()[..],
            &ad,
        );
        let train_prompts: Vec<String> = (0..tb)
            .map(|i| {
                if i % 10 == 0 {
                    String::new()
                } else {
                    "a small blue square moving up on gray".into()
                }
            })
            .collect();
        let step = |on: bool| {
            switched(on, || {
                let text = train_model.encode_text(&train_prompts, &ad);
                let pred = train_model.forward(x0.clone(), times.clone(), &text);
                let grads = (pred - target.clone()).powi_scalar(2).mean().backward();
                let _ = flick_core::params::grads_by_path(&train_model, &grads);
            })
        };
        rows.extend(pair(
            &mut c,
            &crit_dir,
            &device,
            "training step: forward+backward (teacher-small)",
            format!("batch {tb}"),
            fo,
            None,
            None,
            || step(true),
            || step(false),
        )?);

        t.generate_videos(&prompts[..1], &seeds[..1], 2, 2.0, |_, _| {})
            .context("generation with the teacher")?;
        let teacher_25 = || {
            t.generate_videos(&prompts[..1], &seeds[..1], 25, 2.0, |_, _| {})
                .expect("generation");
        };
        let one = || {
            g.generate_videos(&prompts[..1], &seeds[..1], 1, 1.0, |_, _| {})
                .expect("generation");
        };
        rows.extend(pair(
            &mut c,
            &crit_dir,
            &device,
            "one clip: one-step generator vs teacher @25 (w=2)",
            "[3,8,32,32]".into(),
            ("one-step", "teacher @25"),
            None,
            None,
            one,
            teacher_25,
        )?);
    }

    write_report(&out, &device_name, &rows)?;
    Ok(rows)
}

fn write_report(out: &Path, device_name: &str, rows: &[Row]) -> anyhow::Result<()> {
    let mut md = format!(
        "# flick bench on {device_name}\n\nCriterion means, measured side by side in one run on this device (each iteration waits for the device). Speed-up = right side's time / left side's. GFLOP/s and GB/s are the left side's, from the operation's own FLOPs and the bytes it must at least move.\n\n| benchmark | shape | left | right | left ms | right ms | speed-up | left GFLOP/s | left GB/s |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let rate = |x: Option<f64>| {
            x.map(|v| format!("{:.1}", v / r.fused_s / 1e9))
                .unwrap_or_else(|| "—".into())
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | ×{:.2} | {} | {} |\n",
            r.name,
            r.shape,
            r.sides.0,
            r.sides.1,
            r.fused_s * 1e3,
            r.composed_s * 1e3,
            r.speedup,
            rate(r.flops),
            rate(r.bytes)
        ));
    }
    std::fs::write(out.join("bench.md"), &md)?;
    std::fs::write(
        out.join("bench.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "device": device_name, "rows": rows }))?,
    )?;
    eprintln!("{md}");
    Ok(())
}
