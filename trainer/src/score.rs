//! `flick score`: how often generated clips show what the prompt asked for, read from the pixels
//! by `flick_core::eval::analytic` (colour, shape, size, motion, background), on prompts of the
//! training distribution and of the held-out attribute combinations.

use std::path::Path;
use std::time::Instant;

use flick_core::data::shapes::{Attributes, ShapesConfig, ShapesSource, Split, canonical_caption};
use flick_core::eval::analytic::{Agreement, agreement, read};
use flick_core::generate::Generator;
use flick_core::video::{Video, frame_grid};

/// One scored split.
pub struct Scored {
    pub split: Split,
    pub agreement: Agreement,
    pub seconds_per_clip: f32,
}

/// The deterministic prompt set of a split: single objects, canonical captions.
pub fn prompt_set(
    split: Split,
    n: usize,
    frames: usize,
    height: usize,
    width: usize,
) -> Vec<(String, Attributes)> {
    let s = ShapesSource::new(
        ShapesConfig {
            frames,
            height,
            width,
            two_object_prob: 0.0,
        },
        1234,
    )
    .expect("valid geometry");
    (0..n as u64)
        .map(|i| {
            let a = s.sample(split, i).attributes;
            (canonical_caption(a.main(), a.background), a)
        })
        .collect()
}

/// Generate `n` clips per split in batches of `batch` and score them; writes a grid PNG of the
/// first 8 per split into `grid_dir` if given.
pub fn score(
    generator: &Generator,
    n: usize,
    steps: usize,
    guidance: f32,
    batch: usize,
    grid_dir: Option<&Path>,
) -> anyhow::Result<Vec<Scored>> {
    let c = &generator.info.config;
    let mut out = Vec::new();
    for split in [Split::Train, Split::HeldOut] {
        let set = prompt_set(split, n, c.frames, c.height, c.width);
        let mut pairs = Vec::new();
        let mut videos = Vec::new();
        let t0 = Instant::now();
        for (chunk_i, chunk) in set.chunks(batch.max(1)).enumerate() {
            let prompts: Vec<String> = chunk.iter().map(|p| p.0.clone()).collect();
            let seeds: Vec<u64> = (0..chunk.len())
                .map(|j| (chunk_i * batch + j) as u64)
                .collect();
            let clips = generator.generate_clips(&prompts, &seeds, steps, guidance, |_, _| {})?;
            for (clip, (_, attrs)) in clips.iter().zip(chunk) {
                pairs.push((read(clip), attrs.clone()));
                if videos.len() < 8 {
                    videos.push(Video::from_clip(clip));
                }
            }
        }
        let seconds_per_clip = t0.elapsed().as_secs_f32() / n.max(1) as f32;
        if let Some(dir) = grid_dir {
            std::fs::create_dir_all(dir)?;
            let name = format!(
                "score-{}-{steps}steps.png",
                if split == Split::Train {
                    "train"
                } else {
                    "heldout"
                }
            );
            frame_grid(&videos, 3).save(dir.join(name))?;
        }
        out.push(Scored {
            split,
            agreement: agreement(&pairs),
            seconds_per_clip,
        });
    }
    Ok(out)
}

/// `n` real single-object train-like clips of the model's size (their attributes, the clips
/// `[n, 3, T, H, W]`) with their sampled captions, and a fixed noise draw of the same shape.
fn real_batch(
    generator: &Generator,
    n: usize,
    data_seed: u64,
    noise_seed: u64,
) -> (
    Vec<(Attributes, String)>,
    burn::prelude::Tensor<5>,
    burn::prelude::Tensor<5>,
) {
    use burn::prelude::*;
    let c = &generator.info.config;
    let s = ShapesSource::new(
        ShapesConfig {
            frames: c.frames,
            height: c.height,
            width: c.width,
            two_object_prob: 0.0,
        },
        data_seed,
    )
    .expect("valid geometry");
    let (attributes, clips): (Vec<_>, Vec<_>) = (0..n as u64)
        .map(|i| s.sample(Split::Train, i))
        .map(|x| ((x.attributes, x.caption), x.clip))
        .unzip();
    let (x0, shape) = flick_core::data::stack(&clips);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(noise_seed);
    let eps = flick_core::flow::normal_vec(&mut rng, x0.len());
    let device = &generator.device;
    (
        attributes,
        Tensor::<5>::from_data(TensorData::new(x0, shape), device),
        Tensor::<5>::from_data(TensorData::new(eps, shape), device),
    )
}

/// For each start time, 8 real train-like clips noised to it and re-generated with their
/// captions (see [`Generator::resample`]): a grid per time, rows alternating real and re-made.
pub fn renoise_grids(
    generator: &Generator,
    starts: &[f32],
    steps: usize,
    guidance: f32,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let n = 8;
    let (samples, x0, eps) = real_batch(generator, n, 555, 5);
    let prompts: Vec<String> = samples.into_iter().map(|(_, caption)| caption).collect();
    let real = generator.to_clips(x0.clone());
    for &t in starts {
        let made = generator.to_clips(generator.resample(
            &prompts,
            x0.clone(),
            eps.clone(),
            t,
            steps,
            guidance,
        )?);
        let videos: Vec<Video> = real
            .iter()
            .zip(&made)
            .flat_map(|(r, m)| [Video::from_clip(r), Video::from_clip(m)])
            .collect();
        let path = dir.join(format!("renoise-t{t}.png"));
        frame_grid(&videos, 3).save(&path)?;
        eprintln!(
            "wrote {} (odd rows real, even rows re-made from t = {t})",
            path.display()
        );
    }
    Ok(())
}

/// How much the model listens to the caption, per noise level: the mean over `n` train-like
/// prompts of `|v(x_t, c) − v(x_t, ∅)| / |v(x_t, c)|` (the effect of the prompt against the empty
/// prompt), and of the same with a *wrong* caption (a different prompt of the set) in place of
/// `∅`, with `x_t` noised from the real clip of the prompt. A model that ignores its text scores
/// ≈ 0 at every t; text matters most at high t, where the clip can no longer be read off `x_t`.
pub fn caption_sensitivity(generator: &Generator, n: usize, times: &[f32]) -> Vec<(f32, f32, f32)> {
    let n = n.max(2);
    let (samples, x0, eps) = real_batch(generator, n, 1234, 99);
    let captions: Vec<String> = samples
        .iter()
        .map(|(a, _)| canonical_caption(a.main(), a.background))
        .collect();
    let device = &generator.device;
    // Prompts: the right caption, the empty prompt, the next clip's caption.
    let mut prompts = captions.clone();
    prompts.extend(std::iter::repeat_n(String::new(), n));
    prompts.extend((0..n).map(|i| captions[(i + 1) % n].clone()));
    let text = generator.model.encode_text(&prompts, device);
    times
        .iter()
        .map(|&t| {
            let r = relative_changes(generator, &x0, &eps, &text, n, 2, t);
            (t, r[0], r[1])
        })
        .collect()
}

/// Which words the model listens to: per noise level, `|v(x_t, c) − v(x_t, c')| / |v(x_t, c)|`
/// where `c'` is the prompt's caption with one attribute changed to the next value of its kind
/// (shape, colour, size, motion), `x_t` noised from the real clip of the prompt. Returns, per
/// `t`, the four means in that order.
pub fn attribute_sensitivity(
    generator: &Generator,
    n: usize,
    times: &[f32],
) -> Vec<(f32, [f32; 4])> {
    use flick_core::data::shapes::{Color, Motion, Shape, Size};
    fn next<T: Copy + PartialEq>(all: &[T], x: T) -> T {
        let i = all.iter().position(|&y| y == x).unwrap_or(0);
        all[(i + 1) % all.len()]
    }
    let n = n.max(2);
    let (samples, x0, eps) = real_batch(generator, n, 1234, 99);
    let device = &generator.device;
    let mut prompts: Vec<String> = samples
        .iter()
        .map(|(a, _)| canonical_caption(a.main(), a.background))
        .collect();
    for k in 0..4 {
        for (a, _) in &samples {
            let mut o = *a.main();
            match k {
                0 => o.shape = next(Shape::ALL, o.shape),
                1 => o.color = next(Color::ALL, o.color),
                2 => o.size = next(Size::ALL, o.size),
                _ => o.motion = next(Motion::ALL, o.motion),
            }
            prompts.push(canonical_caption(&o, a.background));
        }
    }
    let text = generator.model.encode_text(&prompts, device);
    times
        .iter()
        .map(|&t| {
            let r = relative_changes(generator, &x0, &eps, &text, n, 4, t);
            (t, [r[0], r[1], r[2], r[3]])
        })
        .collect()
}

/// Does the model tie each word to what it looks like? The model as a classifier (Li et al.
/// 2023, "Your diffusion model is secretly a zero-shot classifier"): `n` real train-like clips,
/// each noised at every `t` of `times` with one fixed noise draw; for each attribute kind (shape,
/// colour, size, motion) the canonical caption is written with every value of that kind, and the
/// value whose caption gives the lowest flow-matching error is the model's guess. Returns one row
/// per `t` and a last row for the error summed over all `times`, each with the four accuracies
/// (chance 1/4, 1/7, 1/2, 1/6). A model that has tied a word to its look scores ≈ 1 where `x_t`
/// still shows it; at high `t` the score says whether the word can steer a sample.
pub fn word_classification(generator: &Generator, n: usize, times: &[f32]) -> Vec<[f32; 4]> {
    use burn::prelude::*;
    use flick_core::data::shapes::{Color, Motion, Shape, Size};
    let n = n.max(1);
    let (samples, x0, eps) = real_batch(generator, n, 2468, 13);
    let device = &generator.device;
    let mut hits = vec![[0usize; 4]; times.len() + 1];
    for k in 0..4 {
        let values = [
            Shape::ALL.len(),
            Color::ALL.len(),
            Size::ALL.len(),
            Motion::ALL.len(),
        ][k];
        for (i, (a, _)) in samples.iter().enumerate() {
            // One caption per value of this kind; the clip's own value is `truth`.
            let mut prompts = Vec::with_capacity(values);
            let mut truth = 0;
            for j in 0..values {
                let mut o = *a.main();
                match k {
                    0 => o.shape = Shape::ALL[j],
                    1 => o.color = Color::ALL[j],
                    2 => o.size = Size::ALL[j],
                    _ => o.motion = Motion::ALL[j],
                }
                if o == *a.main() {
                    truth = j;
                }
                prompts.push(canonical_caption(&o, a.background));
            }
            let text = generator.model.encode_text(&prompts, device);
            let x0_i = x0.clone().narrow(0, i, 1);
            let eps_i = eps.clone().narrow(0, i, 1);
            let argmin = |e: &[f32]| {
                e.iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(j, _)| j)
            };
            let mut total = vec![0f32; values];
            for (ti, &t) in times.iter().enumerate() {
                let (xt, target) = flick_core::flow::noise(
                    x0_i.clone(),
                    eps_i.clone(),
                    Tensor::<1>::full([1], t, device),
                );
                let v = generator.model.forward(
                    Tensor::cat(vec![xt; values], 0),
                    Tensor::<1>::full([values], t, device),
                    &text,
                );
                let e: Vec<f32> = (v - target)
                    .powi_scalar(2)
                    .sum_dim(4)
                    .sum_dim(3)
                    .sum_dim(2)
                    .sum_dim(1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32");
                hits[ti][k] += usize::from(argmin(&e) == truth);
                for (acc, e) in total.iter_mut().zip(e) {
                    *acc += e;
                }
            }
            hits[times.len()][k] += usize::from(argmin(&total) == truth);
        }
    }
    hits.iter()
        .map(|h| h.map(|c| c as f32 / n as f32))
        .collect()
}

/// For `x_t` noised from `x0` at `t` and text laid out as `n` right captions followed by `k`
/// groups of `n` alternatives: per group, the mean over clips of `|v(c) − v(c')| / |v(c)|`.
fn relative_changes(
    generator: &Generator,
    x0: &burn::prelude::Tensor<5>,
    eps: &burn::prelude::Tensor<5>,
    text: &flick_core::text::TextContext,
    n: usize,
    k: usize,
    t: f32,
) -> Vec<f32> {
    use burn::prelude::*;
    let device = &generator.device;
    let norms = |v: Tensor<5>| -> Vec<f32> {
        v.powi_scalar(2)
            .sum_dim(4)
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(1)
            .sqrt()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32")
    };
    let (xt, _) =
        flick_core::flow::noise(x0.clone(), eps.clone(), Tensor::<1>::full([n], t, device));
    let v = generator.model.forward(
        Tensor::cat(vec![xt; k + 1], 0),
        Tensor::<1>::full([(k + 1) * n], t, device),
        text,
    );
    let vc = v.clone().narrow(0, 0, n);
    let nc = norms(vc.clone());
    (1..=k)
        .map(|g| {
            let d = norms(vc.clone() - v.clone().narrow(0, g * n, n));
            d.iter().zip(&nc).map(|(d, c)| d / c.max(1e-8)).sum::<f32>() / n as f32
        })
        .collect()
}

/// Denoising error per noise level on real train-like clips with their captions: the mean
/// flow-matching loss `|v̂ − v|²` per value, the same for the best *linear* guess `c_skip·x_t`
/// (what the network must beat), and the RMS error of the implied clean clip
/// `x̂0 = x_t − t·v̂`. Shows where in t a model is still weak (e.g. noise left in at low t).
pub fn loss_by_time(generator: &Generator, n: usize, times: &[f32]) -> Vec<(f32, f32, f32, f32)> {
    use burn::prelude::*;
    let c = &generator.info.config;
    let (samples, x0, eps) = real_batch(generator, n, 4321, 7);
    let prompts: Vec<String> = samples.into_iter().map(|(_, caption)| caption).collect();
    let device = &generator.device;
    let text = generator.model.encode_text(&prompts, device);
    let mean = |v: Tensor<5>| -> f32 { v.mean().into_scalar() };
    times
        .iter()
        .map(|&t| {
            let (xt, target) =
                flick_core::flow::noise(x0.clone(), eps.clone(), Tensor::<1>::full([n], t, device));
            let v = generator
                .model
                .forward(xt.clone(), Tensor::<1>::full([n], t, device), &text);
            let (_, c_skip, _) = flick_core::model::preconditioning(t, c.sigma_data);
            let loss = mean((v.clone() - target.clone()).powi_scalar(2));
            let linear = mean((xt.clone() * c_skip - target).powi_scalar(2));
            let x0_err = mean((xt - v * t - x0.clone()).powi_scalar(2)).sqrt();
            (t, loss, linear, x0_err)
        })
        .collect()
}

/// A markdown table of scores.
pub fn table(rows: &[(String, Vec<Scored>)]) -> String {
    let mut s = String::from(
        "| model | prompts | colour | shape | size | motion | background | all five | s/clip |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, scored) in rows {
        for r in scored {
            let a = &r.agreement;
            let pct = |v: f32| format!("{:.0}%", v * 100.0);
            s += &format!(
                "| {name} | {} ({}) | {} | {} | {} | {} | {} | {} | {:.2} |\n",
                if r.split == Split::Train {
                    "train-like"
                } else {
                    "held-out"
                },
                a.clips,
                pct(a.color),
                pct(a.shape),
                pct(a.size),
                pct(a.motion),
                pct(a.background),
                pct(a.all),
                r.seconds_per_clip
            );
        }
    }
    s
}
