//! `flick eval`: quality tables on held-out prompts, judged by the attribute probe.
//!
//! Prompts are the held-out attribute combinations of the procedural source (no training clip
//! shows them), one object each, canonical captions. For every prompt there are `seeds`
//! generated clips per model row (the same prompts and seeds on every row) and two independent
//! sets of real clips of the same attributes: set A is the reference every metric compares to,
//! set B is scored like a model (the "real clips" row: the best a generator can do).
//!
//! Metrics per row: probe adherence per attribute and all-correct (motion, the temporal check,
//! is its own column), Fréchet distance between probe features of the row and real set A
//! (FD-probe), improved precision/recall (k = 3) on the same features, and diversity: the mean
//! pairwise RMS pixel distance between clips of one prompt across seeds, divided by the same
//! figure on real clips (≈ 0 = mode collapse). Adherence is reported only if the probe reads
//! held-out real clips with ≥ 98% accuracy on every attribute; otherwise the eval says why.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::data::shapes::{Attributes, ShapesConfig, ShapesSource, Split, canonical_caption};
use flick_core::data::{Clip, stack};
use flick_core::eval::artifacts::{mean_score, outline_flicker, patch_grid};
use flick_core::eval::metrics::{adherence, diversity, frechet_distance, precision_recall};
use flick_core::eval::probe::{self, HEADS, Probe, ProbeConfig};
use flick_core::generate::Generator;
use flick_core::video::{Video, frame_grid};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Probe accuracy every attribute must reach before adherence is reported.
pub const PROBE_BAR: f64 = 0.98;

/// `[label=]path@steps[:guidance]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub path: PathBuf,
    pub steps: usize,
    pub guidance: Option<f32>,
    /// Row name; default: a generator's `method` metadata, else the file name.
    pub label: Option<String>,
}

impl FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (label, spec) = match s.split_once('=') {
            Some((l, rest)) if !l.is_empty() && !l.contains(['/', '@', '\\']) => {
                (Some(l.to_string()), rest)
            }
            _ => (None, s),
        };
        let (path, rest) = spec
            .rsplit_once('@')
            .ok_or_else(|| format!("{s:?}: expected [LABEL=]CHECKPOINT@STEPS[:GUIDANCE]"))?;
        let (steps, guidance) = match rest.split_once(':') {
            Some((a, b)) => (
                a,
                Some(
                    b.parse::<f32>()
                        .map_err(|_| format!("{s:?}: guidance {b:?} is not a number"))?,
                ),
            ),
            None => (rest, None),
        };
        let steps: usize = steps
            .parse()
            .map_err(|_| format!("{s:?}: steps {steps:?} is not a whole number"))?;
        if steps == 0 || path.is_empty() {
            return Err(format!("{s:?}: needs a checkpoint path and steps ≥ 1"));
        }
        Ok(Self {
            path: PathBuf::from(path),
            steps,
            guidance,
            label,
        })
    }
}

/// What to evaluate.
pub struct EvalArgs {
    pub models: Vec<ModelSpec>,
    pub probe: PathBuf,
    pub prompts: usize,
    pub seeds: usize,
    pub batch: usize,
    pub out: PathBuf,
    pub device: Device,
    pub quiet: bool,
}

/// The patch size of Flick's DiT: the period at which `flick eval` looks for a patch grid (the
/// same period for every backbone, so the column compares them).
pub const GRID_PERIOD: usize = 4;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub clips: usize,
    /// Per attribute (shape, color, size, motion, background), `None` if the probe is not trusted.
    pub adherence: Option<BTreeMap<String, f64>>,
    pub all_correct: Option<f64>,
    pub fd_probe: f64,
    pub precision: f64,
    pub recall: f64,
    pub diversity: f64,
    /// Patch-grid score ([`patch_grid`] at [`GRID_PERIOD`]) relative to real clips (1 = as real
    /// clips; higher = steps at the DiT's patch borders); `None` if no clip had a usable pixel pair.
    pub patch_grid: Option<f64>,
    /// Outline flicker ([`outline_flicker`]) relative to real clips (1 = as real clips);
    /// `None` if no clip had an object in every frame.
    pub flicker: Option<f64>,
    pub seconds_per_clip: Option<f64>,
    pub grid: String,
}

#[derive(Serialize)]
struct Report<'a> {
    prompts: usize,
    seeds: usize,
    probe: String,
    probe_heldout_accuracy: BTreeMap<String, f64>,
    probe_trusted: bool,
    rows: &'a [Row],
    eval_seconds: f64,
}

struct Judged {
    features: Vec<Vec<f32>>,
    predicted: Vec<[usize; 5]>,
}

fn judge(probe: &Probe, clips: &[Clip], device: &Device) -> Judged {
    let mut features = Vec::with_capacity(clips.len());
    let mut predicted = Vec::with_capacity(clips.len());
    for chunk in clips.chunks(64) {
        let (data, shape) = stack(chunk);
        let (f, logits) =
            probe.forward(Tensor::<5>::from_data(TensorData::new(data, shape), device));
        let k = f.dims()[1];
        let f: Vec<f32> = f.into_data().try_to_vec::<f32>().expect("f32 features");
        features.extend(f.chunks(k).map(|c| c.to_vec()));
        predicted.extend(probe::predict(logits));
    }
    Judged {
        features,
        predicted,
    }
}

/// The held-out prompt set: `n` single-object attribute sets and their canonical captions.
pub fn heldout_prompts(n: usize, cfg: &ProbeConfig) -> Vec<(String, Attributes)> {
    let s = ShapesSource::new(
        ShapesConfig {
            frames: cfg.frames,
            height: cfg.height,
            width: cfg.width,
            two_object_prob: 0.0,
        },
        1234,
    )
    .expect("valid geometry");
    (0..n as u64)
        .map(|i| {
            let a = s.sample(Split::HeldOut, i).attributes;
            (canonical_caption(a.main(), a.background), a)
        })
        .collect()
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// Run the evaluation; writes `eval.md`, `eval.json`, one grid PNG per row and `eval.png`
/// (bar chart) into `args.out`. Returns the rows.
pub fn run(args: &EvalArgs) -> anyhow::Result<Vec<Row>> {
    let started = Instant::now();
    anyhow::ensure!(
        args.prompts >= 4 && args.seeds >= 2,
        "--prompts must be ≥ 4 and --seeds ≥ 2 (diversity compares seeds of one prompt)"
    );
    anyhow::ensure!(
        args.prompts * args.seeds > 3,
        "too few clips for precision/recall"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let device = &args.device;
    let (probe, pcfg, _) = probe::load(&args.probe, device)
        .with_context(|| "the attribute probe is needed (train it with `flick train-probe`)")?;

    // 1. Can the probe be trusted? Accuracy on held-out real clips, printed every time.
    let (per, all) = probe::accuracy(&probe, &pcfg, Split::HeldOut, 1024, 777, 64, device);
    let probe_acc = crate::probe::accuracy_map(per, all);
    let trusted = per.iter().all(|&a| a >= PROBE_BAR);
    eprintln!(
        "probe {} on 1024 held-out real clips: {}",
        args.probe.display(),
        HEADS
            .iter()
            .zip(per)
            .map(|((n, _), a)| format!("{n} {}", pct(a)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !trusted {
        eprintln!(
            "probe accuracy is below {} on some attribute: adherence is NOT reported (retrain the probe: `flick train-probe`)",
            pct(PROBE_BAR)
        );
    }

    // 2. Prompts and real clips (two independent sets).
    let prompts = heldout_prompts(args.prompts, &pcfg);
    let source = ShapesSource::new(
        ShapesConfig {
            frames: pcfg.frames,
            height: pcfg.height,
            width: pcfg.width,
            two_object_prob: 0.0,
        },
        4321,
    )?;
    let labels: Vec<[usize; 5]> = prompts
        .iter()
        .flat_map(|(_, a)| std::iter::repeat_n(probe::labels(a), args.seeds))
        .collect();
    let real = |set: u64| -> Vec<Clip> {
        prompts
            .iter()
            .enumerate()
            .flat_map(|(i, (_, a))| (0..args.seeds).map(move |j| (i, a, j)))
            .map(|(i, a, j)| {
                source.render_attributes(a, set * 1_000_000 + (i * args.seeds + j) as u64)
            })
            .collect()
    };
    let (real_a, real_b) = (real(1), real(2));
    let judged_a = judge(&probe, &real_a, device);
    let group = |clips: &[Clip]| -> Vec<Vec<Vec<f32>>> {
        clips
            .chunks(args.seeds)
            .map(|g| g.iter().map(|c| c.data.clone()).collect())
            .collect()
    };
    let real_div = diversity(&group(&real_a));
    let real_flicker = mean_score(&real_a, outline_flicker);
    let grid_score = |c: &Clip| patch_grid(c, GRID_PERIOD);
    let real_grid = mean_score(&real_a, grid_score);

    let mut rows = Vec::new();
    let score = |name: String,
                 steps: Option<usize>,
                 guidance: Option<f32>,
                 clips: &[Clip],
                 secs: Option<f64>,
                 grid: String|
     -> Row {
        let j = judge(&probe, clips, device);
        let (per, all) = adherence(&j.predicted, &labels);
        let (precision, recall) = precision_recall(&judged_a.features, &j.features, 3);
        Row {
            name,
            steps,
            guidance,
            clips: clips.len(),
            adherence: trusted.then(|| {
                HEADS
                    .iter()
                    .zip(per)
                    .map(|((n, _), a)| (n.to_string(), a))
                    .collect()
            }),
            all_correct: trusted.then_some(all),
            fd_probe: frechet_distance(&judged_a.features, &j.features),
            precision,
            recall,
            diversity: diversity(&group(clips)) / real_div.max(1e-12),
            patch_grid: mean_score(clips, grid_score)
                .zip(real_grid)
                .map(|(m, r)| m / r.max(1e-12)),
            flicker: mean_score(clips, outline_flicker)
                .zip(real_flicker)
                .map(|(m, r)| m / r.max(1e-12)),
            seconds_per_clip: secs,
            grid,
        }
    };
    let grid_of = |clips: &[Clip], file: &str| -> anyhow::Result<String> {
        let videos: Vec<Video> = clips
            .iter()
            .step_by(args.seeds)
            .take(8)
            .map(Video::from_clip)
            .collect();
        frame_grid(&videos, 3).save(args.out.join(file))?;
        Ok(file.to_string())
    };
    rows.push(score(
        "real clips".into(),
        None,
        None,
        &real_b,
        None,
        grid_of(&real_b, "grid-real.png")?,
    ));

    // 3. Models.
    let total = (args.models.len() * prompts.len() * args.seeds) as u64;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} clips {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap(),
    );
    let mut loaded: BTreeMap<PathBuf, Generator> = BTreeMap::new();
    for (m, spec) in args.models.iter().enumerate() {
        if !loaded.contains_key(&spec.path) {
            let g = Generator::load(&spec.path, device)?;
            let c = &g.info.config;
            if (c.frames, c.height, c.width) != (pcfg.frames, pcfg.height, pcfg.width) {
                bail!(
                    "{} makes {}×{}×{} clips but the probe reads {}×{}×{}",
                    spec.path.display(),
                    c.frames,
                    c.height,
                    c.width,
                    pcfg.frames,
                    pcfg.height,
                    pcfg.width
                );
            }
            loaded.insert(spec.path.clone(), g);
        }
        let g = &loaded[&spec.path];
        let guidance = spec.guidance.unwrap_or(g.defaults().guidance);
        let base = match (&spec.label, g.info.kind.as_str()) {
            (Some(l), _) => l.clone(),
            (None, "generator") => g
                .info
                .extra
                .get("method")
                .cloned()
                .unwrap_or_else(|| "generator".into()),
            (None, _) => spec
                .path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        };
        let name = format!("{base} @{} (w={guidance})", spec.steps);
        bar.set_message(name.clone());
        let pairs: Vec<(String, u64)> = prompts
            .iter()
            .flat_map(|(p, _)| (0..args.seeds as u64).map(move |s| (p.clone(), s)))
            .collect();
        let t0 = Instant::now();
        let mut clips = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(args.batch.max(1)) {
            let ps: Vec<String> = chunk.iter().map(|p| p.0.clone()).collect();
            let ss: Vec<u64> = chunk.iter().map(|p| p.1).collect();
            clips.extend(g.generate_clips(&ps, &ss, spec.steps, guidance, |_, _| {})?);
            bar.inc(chunk.len() as u64);
        }
        let secs = t0.elapsed().as_secs_f64() / clips.len() as f64;
        if !args.quiet && !std::io::stderr().is_terminal() {
            // No progress bar without a terminal (logs, nohup): a line per row instead.
            eprintln!(
                "{name}: {} clips, {secs:.3} s/clip ({}/{} clips, {:.0} s so far)",
                clips.len(),
                bar.position(),
                total,
                started.elapsed().as_secs_f64()
            );
        }
        let grid = grid_of(&clips, &format!("grid-{}.png", m + 1))?;
        rows.push(score(
            name,
            Some(spec.steps),
            Some(guidance),
            &clips,
            Some(secs),
            grid,
        ));
    }
    bar.finish_and_clear();

    // 4. Reports.
    let md = table(&rows, args, &probe_acc, trusted);
    std::fs::write(args.out.join("eval.md"), &md)?;
    let report = Report {
        prompts: prompts.len(),
        seeds: args.seeds,
        probe: args.probe.display().to_string(),
        probe_heldout_accuracy: probe_acc,
        probe_trusted: trusted,
        rows: &rows,
        eval_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        args.out.join("eval.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let metrics = [
        "shape",
        "color",
        "size",
        "motion",
        "backgr",
        "all",
        "precision",
        "recall",
    ];
    let series: Vec<(String, Vec<f64>)> = rows
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = match &r.adherence {
                Some(a) => HEADS
                    .iter()
                    .map(|(n, _)| a[*n])
                    .chain(r.all_correct)
                    .collect(),
                None => vec![f64::NAN; 6],
            };
            v.extend([r.precision, r.recall]);
            (r.name.clone(), v)
        })
        .collect();
    crate::plot::bar_chart(&args.out.join("eval.png"), &metrics, &series)?;
    println!("{md}");
    eprintln!(
        "wrote {} (and eval.json, eval.png, grid-*.png) in {:.0} s",
        args.out.join("eval.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

fn table(
    rows: &[Row],
    args: &EvalArgs,
    probe_acc: &BTreeMap<String, f64>,
    trusted: bool,
) -> String {
    let mut s = format!(
        "Held-out prompts: {} (attribute combinations no training clip shows) × {} seeds. Probe `{}`, accuracy on 1024 held-out real clips: {}.\n\n",
        args.prompts,
        args.seeds,
        args.probe.display(),
        probe_acc
            .iter()
            .map(|(k, v)| format!("{k} {}", pct(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !trusted {
        s += &format!(
            "**Adherence not reported: the probe reads some attribute of real clips with less than {} accuracy.**\n\n",
            pct(PROBE_BAR)
        );
    }
    s += "| model | shape | colour | size | motion | background | all correct | FD-probe ↓ | precision | recall | diversity | patch grid ↓ | flicker ↓ | s/clip |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let adh = match &r.adherence {
            Some(a) => HEADS
                .iter()
                .map(|(n, _)| pct(a[*n]))
                .chain(r.all_correct.map(pct))
                .collect::<Vec<_>>(),
            None => vec!["—".to_string(); 6],
        };
        s += &format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |\n",
            r.name,
            adh.join(" | "),
            r.fd_probe,
            r.precision,
            r.recall,
            r.diversity,
            r.patch_grid.map_or("—".to_string(), |v| format!("{v:.2}")),
            r.flicker.map_or("—".to_string(), |v| format!("{v:.2}")),
            r.seconds_per_clip
                .map_or("—".to_string(), |v| format!("{v:.3}"))
        );
    }
    s += &format!(
        "\nPatch grid: spectral power at the spatial frequencies of a {GRID_PERIOD}-pixel grid (the DiT's patches) over their neighbours' — a pattern repeated in every patch; flicker: the frame-to-frame change of the object's outline with its motion removed; both relative to real clips (1 = as real clips, lower is better)."
    );
    s += "\nDiversity is relative to real clips of the same prompts (1 = as varied as the data, 0 = one clip per prompt). The real-clips row is a second, independent set of real clips scored like a model: the floor of FD-probe and the ceiling of the other columns.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse() {
        assert_eq!(
            "a/b.safetensors@25".parse::<ModelSpec>().unwrap(),
            ModelSpec {
                path: "a/b.safetensors".into(),
                steps: 25,
                guidance: None,
                label: None
            }
        );
        assert_eq!(
            "x@y@1:2.5".parse::<ModelSpec>().unwrap(),
            ModelSpec {
                path: "x@y".into(),
                steps: 1,
                guidance: Some(2.5),
                label: None
            }
        );
        assert_eq!(
            "apt-no-r1=runs/a=b/g.safetensors@1"
                .parse::<ModelSpec>()
                .unwrap(),
            ModelSpec {
                path: "runs/a=b/g.safetensors".into(),
                steps: 1,
                guidance: None,
                label: Some("apt-no-r1".into())
            }
        );
        assert_eq!(
            "runs/a=b/g.safetensors@1"
                .parse::<ModelSpec>()
                .unwrap()
                .label,
            None
        );
        for bad in ["model.safetensors", "m@0", "m@two", "@3", "m@3:w"] {
            assert!(bad.parse::<ModelSpec>().is_err(), "{bad}");
        }
    }
}
