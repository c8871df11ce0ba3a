//! `flick distill dmd`: distribution matching distillation (DMD, and DMD2's two time-scale
//! update), on the same teacher, pair cache, loop scaffold and checkpoints as APT.
//!
//! Per step (everything random a function of `(seed, step)`):
//! 1. **fake score**: a copy of the teacher, trained online with the teacher's flow-matching loss
//!    on the generator's detached one-step samples (`t` uniform, shifted like the teacher's
//!    training times), unguided;
//! 2. **generator** (every step for DMD; every `fake_updates`-th for DMD2): `x = G(z, c)`, noised
//!    once to `x_t` at `t ∈ [t_min, t_max]` (shifted like the teacher's sampling), both scores'
//!    clean predictions at the same `x_t` (the real one guided), the distribution-matching
//!    gradient and loss of `flick_core::distill::dmd`; DMD adds the regression on the cached
//!    teacher pairs (`reg_weight`, DMD's λ_reg = 0.25; DMD's LPIPS needs weights Flick cannot
//!    download: pixel MSE plus `probe_weight` × a distance on the bundled attribute probe's
//!    features).
//!
//! DMD2's GAN (`gan_g_weight`, `gan_d_weight`): the fake score carries APT's learnable-query
//! heads on its tapped features (the same `Discriminator` as APT, its backbone being the fake
//! score), trained with the non-saturating loss on real clips against generated ones, both
//! re-noised at `t` uniform; the generator gets the matching non-saturating term.
//!
//! A multi-step generator (`generator_times`, DMD2's backward simulation): each update trains
//! one of its steps, picked at random, on an input made by its own earlier steps without
//! gradient; the checkpoint records the times and `flick generate --steps K` samples with
//! denoise/re-noise steps (`Generator::sample`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::checkpoint::{NamedTensors, load_module, module_tensors, write_safetensors};
use flick_core::data::shapes::{ShapesConfig, ShapesSource, Split};
use flick_core::distill::dmd::{clean_prediction, dm_gradient, dm_loss};
use flick_core::distill::losses::softplus;
use flick_core::distill::{one_step, pairs};
use flick_core::flow::{guide, noise, normal_vec, shift};
use flick_core::model::Backbone;
use flick_core::model::disc::Discriminator;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::distill::{
    DistillConfig, entries, load_init, load_teacher, rows, save_generator, write_samples,
};
use crate::optim::{AdamW, Placed, Replicas, data_parallel_grads, gate_of, place};
use crate::run;
use crate::train::step_rng;

/// DMD or DMD2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Distribution matching plus the regression on the teacher's pairs, one generator update
    /// per fake-score update.
    Dmd,
    /// No regression; two time-scale updates (the generator every `fake_updates`-th step).
    Dmd2,
}

/// `[dmd]` of a distill config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmdConfig {
    pub variant: Variant,
    pub steps: u64,
    pub batch_size: usize,
    /// Generator and fake-score learning rates (AdamW, DMD2: β = (0, 0.999)).
    pub lr_g: f32,
    pub lr_fake: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub grad_clip: f32,
    /// Classifier-free guidance of the real score (the frozen teacher).
    pub guidance: f32,
    /// Range of the distribution-matching times (before the shift): DMD's [0.02, 0.98].
    pub t_min: f32,
    pub t_max: f32,
    /// DMD's regression loss weight (λ_reg = 0.25); unused by DMD2.
    pub reg_weight: f32,
    /// Weight of the probe-feature distance within DMD's regression (in place of LPIPS, whose
    /// weights Flick cannot download): `MSE(x, x_teacher) + probe_weight·MSE(φ(x), φ(x_teacher))`,
    /// `φ` the bundled attribute probe's features (frozen). 0 = pixel MSE alone.
    #[serde(default)]
    pub probe_weight: f32,
    /// DMD2's time-scale ratio: fake-score updates per generator update (5); DMD: 1.
    pub fake_updates: u64,
    /// DMD2's GAN: weights of the generator's and the fake score's non-saturating losses
    /// (DMD2: 3e-3 and 1e-2; 0 = no GAN). The classifier is the fake score's backbone with
    /// APT's learnable-query heads on its tapped features (`gan_heads` attention heads each),
    /// on clips re-noised at `t` uniform.
    #[serde(default)]
    pub gan_g_weight: f32,
    #[serde(default)]
    pub gan_d_weight: f32,
    #[serde(default = "default_gan_heads")]
    pub gan_heads: usize,
    pub ema_decay: f32,
    /// A multi-step generator (DMD2's backward simulation): its denoise/re-noise times, from 1
    /// down (e.g. `[1.0, 0.75, 0.5, 0.25]`). Each step trains one of them, picked at random: its
    /// input is made by running the generator's own earlier steps (no gradient), as
    /// `sample_backward` of the reference code. Empty = a one-step generator.
    #[serde(default)]
    pub generator_times: Vec<f32>,
    /// Captions: the procedural training stream with this seed.
    pub data_seed: u64,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Sample grid every this many steps (0 = only at the end).
    #[serde(default)]
    pub sample_every: u64,
    /// Consecutive non-finite steps (of either network) after which training stops with an error.
    #[serde(default = "crate::run::default_max_bad_steps")]
    pub max_bad_steps: u64,
    /// Checkpoints kept: the current state and, above 1, the newest earlier ones in
    /// `checkpoints/` (hard links; the oldest deleted first).
    #[serde(default = "crate::run::default_keep_checkpoints")]
    pub keep_checkpoints: u64,
}

fn default_gan_heads() -> usize {
    4
}

impl DmdConfig {
    fn gan(&self) -> bool {
        self.gan_g_weight > 0.0 || self.gan_d_weight > 0.0
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.steps > 0
                && self.batch_size > 0
                && self.log_every > 0
                && self.checkpoint_every > 0
                && self.fake_updates > 0,
            "dmd: steps, batch_size, log_every, checkpoint_every and fake_updates must be ≥ 1"
        );
        anyhow::ensure!(
            0.0 < self.t_min && self.t_min < self.t_max && self.t_max <= 1.0,
            "dmd: need 0 < t_min < t_max ≤ 1, got [{}, {}]",
            self.t_min,
            self.t_max
        );
        anyhow::ensure!(
            self.lr_g > 0.0
                && self.lr_fake > 0.0
                && self.reg_weight >= 0.0
                && self.gan_g_weight >= 0.0
                && self.gan_d_weight >= 0.0,
            "dmd: learning rates must be > 0, reg_weight and the GAN weights ≥ 0"
        );
        anyhow::ensure!(
            !self.gan() || self.gan_heads > 0,
            "dmd: gan_heads must be ≥ 1"
        );
        let t = &self.generator_times;
        anyhow::ensure!(
            t.is_empty()
                || (t[0] == 1.0 && t.windows(2).all(|w| w[1] < w[0]) && t.iter().all(|&x| x > 0.0)),
            "dmd.generator_times must start at 1 and decrease, all > 0; got {t:?}"
        );
        Ok(())
    }

    /// The settings the variant actually uses: the GAN and the two time-scale rule are DMD2's,
    /// so `variant = "dmd"` ignores `gan_*` and `fake_updates` (one config file can then carry
    /// both variants, picked with `--variant`).
    fn resolved(&self) -> Self {
        let mut c = self.clone();
        if c.variant == Variant::Dmd {
            (c.gan_g_weight, c.gan_d_weight, c.fake_updates) = (0.0, 0.0, 1);
        }
        c
    }

    /// Generator updates on this step?
    fn generator_step(&self, step: u64) -> bool {
        match self.variant {
            Variant::Dmd => true,
            Variant::Dmd2 => step % self.fake_updates == self.fake_updates - 1,
        }
    }
}

#[derive(Serialize)]
struct DmdMetrics {
    step: u64,
    /// The fake score's flow-matching loss.
    fake_loss: f32,
    /// The generator's DM loss `0.5·mean(grad²)` (None on fake-only steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    dm_loss: Option<f32>,
    /// mean |grad| of the distribution-matching gradient.
    #[serde(skip_serializing_if = "Option::is_none")]
    dm_grad: Option<f32>,
    /// DMD's regression loss on the teacher's pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    reg_loss: Option<f32>,
    /// The fake score's GAN loss (real against generated) and the generator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    gan_d_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gan_g_loss: Option<f32>,
    /// Mean and standard deviation of the generated pixels (drift and over-saturation show here).
    gen_mean: f32,
    gen_std: f32,
    fake_grad_norm: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    g_grad_norm: Option<f32>,
    clips_per_s: f32,
    elapsed_s: f32,
    /// Updates skipped so far for a non-finite loss or gradient (all networks).
    skipped_steps: u64,
}

/// Options of `flick distill dmd`.
pub struct DmdArgs<'a> {
    pub cfg: &'a DistillConfig,
    pub teacher: &'a Path,
    /// The generator's start (`flick distill consistency`'s generator, or the teacher).
    pub init: &'a Path,
    /// The teacher's pair cache (DMD's regression).
    pub pairs: Option<&'a Path>,
    /// The attribute probe for the regression's feature distance (`dmd.probe_weight > 0`).
    pub probe: Option<&'a Path>,
    pub out: &'a Path,
    pub resume: bool,
    pub device: Device,
    /// Where the batch's shares run (threads on `device`, or devices led by `device`).
    pub replicas: Replicas,
    pub stop_at: Option<u64>,
    pub quiet: bool,
}

/// Distribution matching distillation. Writes `<out>/generator.safetensors` (the generator EMA)
/// at every checkpoint; returns the EMA.
pub fn train_dmd(args: DmdArgs<'_>) -> anyhow::Result<Backbone> {
    let DmdArgs {
        cfg,
        teacher: teacher_path,
        init,
        pairs: pairs_dir,
        probe: probe_path,
        out,
        resume,
        device,
        replicas,
        stop_at,
        quiet,
    } = args;
    let dc = &cfg
        .dmd
        .as_ref()
        .context("the distill config has no [dmd] section")?
        .resolved();
    dc.validate()?;
    let teacher = load_teacher(teacher_path, &device)?;
    anyhow::ensure!(
        teacher.info.kind == "teacher",
        "--teacher {} is a {:?} checkpoint; the real and fake scores start from the multi-step teacher",
        teacher_path.display(),
        teacher.info.kind
    );
    let mc = teacher.info.config.clone();
    let data = match (dc.variant, pairs_dir) {
        (Variant::Dmd, Some(dir)) if dc.reg_weight > 0.0 => {
            let d = pairs::read_all(dir)?;
            anyhow::ensure!(
                !d.is_empty() && d.shape[1..] == [3, mc.frames, mc.height, mc.width],
                "pairs in {} are empty or of another clip shape than the teacher's",
                dir.display()
            );
            Some(d)
        }
        (Variant::Dmd, None) if dc.reg_weight > 0.0 => bail!(
            "DMD's regression loss needs the teacher's pairs: pass --pairs DIR (flick distill pairs), or set dmd.reg_weight = 0"
        ),
        _ => None,
    };
    let ad = device.clone().autodiff();
    let shares = replicas.shares(&ad);
    let probe = match (&data, probe_path) {
        (Some(_), Some(p)) if dc.probe_weight > 0.0 => {
            Some(flick_core::eval::probe::load(p, &ad)?.0.no_grad())
        }
        (Some(_), None) if dc.probe_weight > 0.0 => {
            bail!("dmd.probe_weight > 0 needs the attribute probe (--probe FILE)")
        }
        _ => None,
    };
    let saved = run::open(out, resume)?;
    let state = run::state_path(out);
    let tag = format!("{:?}", dc.variant).to_lowercase();
    let times_tag = if dc.generator_times.len() > 1 {
        let t: Vec<String> = dc.generator_times.iter().map(|t| t.to_string()).collect();
        t.join(",")
    } else {
        "1".to_string()
    };
    let (real, _) = flick_core::checkpoint::load_model(teacher_path, &ad)?;
    let real = real.no_grad();
    let real_on = Placed::new(&real, &shares);
    let probe_on = probe.as_ref().map(|p| Placed::new(p, &shares));
    let mut opt_g = AdamW::new(dc.beta1, dc.beta2, 1e-8, 0.0);
    let mut opt_f = AdamW::new(dc.beta1, dc.beta2, 1e-8, 0.0);
    let (mut g, mut g_ema, mut fake, mut step) = if let Some(saved) = saved {
        let t = &saved.tensors;
        if let Some(v) = saved.meta.get("variant").filter(|v| **v != tag) {
            bail!(
                "{} was trained as {v}, this invocation asks for {tag}: resume with the same variant",
                state.display()
            );
        }
        if let Some(t) = saved.meta.get("times").filter(|t| **t != times_tag) {
            bail!(
                "{} trains a generator with steps at t = {t}, this invocation asks for {times_tag}: resume with the same generator_times",
                state.display()
            );
        }
        let g = load_module(mc.init(&ad), t, "g.", &ad)?;
        let g_ema = load_module(mc.init(&device), t, "g_ema.", &device)?;
        let fake = load_module(
            Discriminator::new(mc.init(&ad), dc.gan_heads, &ad),
            t,
            "fake.",
            &ad,
        )?;
        let split = |prefix: &str| -> NamedTensors {
            t.iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v.clone())))
                .collect()
        };
        opt_g.load_state(&split("opt_g."), saved.field("opt_g_t")?.parse()?, &device);
        opt_f.load_state(&split("opt_f."), saved.field("opt_f_t")?.parse()?, &device);
        let step = saved.step()?;
        eprintln!("resumed from {} at step {step}", state.display());
        (g, g_ema, fake, step)
    } else {
        let (g, g_ema) = load_init(init, &mc, &ad, &device)?;
        let (fake, _) = flick_core::checkpoint::load_model(teacher_path, &ad)?;
        let d = run::seeded(&device, dc.seed, || {
            Discriminator::new(fake, dc.gan_heads, &ad)
        });
        (g, g_ema, d, 0)
    };
    eprintln!(
        "{}: real score = the teacher with guidance {}, fake score = a trained copy; generator from {}{}",
        tag.to_uppercase(),
        dc.guidance,
        init.display(),
        match (&data, dc.variant) {
            (Some(d), _) => format!(
                ", regression on {} teacher pairs (λ {})",
                d.len(),
                dc.reg_weight
            ),
            (None, Variant::Dmd2) => format!(", generator updated every {} steps", dc.fake_updates),
            (None, Variant::Dmd) => String::new(),
        }
    );

    let source = ShapesSource::new(
        ShapesConfig {
            frames: mc.frames,
            height: mc.height,
            width: mc.width,
            two_object_prob: 0.25,
        },
        dc.data_seed,
    )?;
    let last = stop_at.map_or(dc.steps, |s| s.min(dc.steps));
    let mut progress = run::Progress::start(out, dc.steps, step, quiet)?;
    let mut f_guard = run::Guard::new("fake-score", "a lower dmd.lr_fake", dc.max_bad_steps, 0);
    let mut g_guard = run::Guard::new("generator", "a lower dmd.lr_g", dc.max_bad_steps, 0);
    let mut saved_step = step;
    let b = dc.batch_size;
    let shape = [b, 3, mc.frames, mc.height, mc.width];
    let per: usize = shape[1..].iter().product();
    let empty: Vec<String> = vec![String::new(); b];
    let save = |g: &Backbone,
                g_ema: &Backbone,
                fake: &Discriminator,
                opt_g: &AdamW,
                opt_f: &AdamW,
                step: u64|
     -> anyhow::Result<()> {
        let mut tensors = NamedTensors::new();
        module_tensors(g, "g.", &mut tensors);
        module_tensors(g_ema, "g_ema.", &mut tensors);
        module_tensors(fake, "fake.", &mut tensors);
        for (prefix, opt) in [("opt_g.", opt_g), ("opt_f.", opt_f)] {
            let mut o = NamedTensors::new();
            opt.state_tensors(&mut o);
            tensors.extend(o.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
        let meta = BTreeMap::from([
            ("format".to_string(), "flick-dmd-state/1".to_string()),
            ("step".to_string(), step.to_string()),
            ("variant".to_string(), tag.clone()),
            ("times".to_string(), times_tag.clone()),
            ("opt_g_t".to_string(), opt_g.t().to_string()),
            ("opt_f_t".to_string(), opt_f.t().to_string()),
        ]);
        write_safetensors(&state, &tensors, meta)?;
        run::keep_history(out, step, dc.keep_checkpoints)?;
        let path = out.join("generator.safetensors");
        save_generator(&path, g_ema, &teacher, &tag, step)?;
        if dc.generator_times.len() > 1 {
            // A multi-step generator: its times go into the checkpoint (the sampler reads them).
            let (tensors, mut meta) = flick_core::checkpoint::read_safetensors(&path)?;
            meta.insert("times".into(), times_tag.clone());
            write_safetensors(&path, &tensors, meta)?;
        }
        Ok(())
    };

    while step < last {
        let mut rng = step_rng(dc.seed, step);
        // Captions of the procedural stream (and, for the GAN, its clips: the real side).
        let items: Vec<_> = (0..b)
            .map(|j| {
                let s = source.sample(Split::Train, step * b as u64 + j as u64);
                (dc.gan().then_some(s.clip), s.caption)
            })
            .collect();
        let prompts: Vec<String> = items.iter().map(|i| i.1.clone()).collect();
        let real_clips = dc.gan().then(|| {
            flick_core::data::stack(&items.iter().filter_map(|i| i.0.clone()).collect::<Vec<_>>()).0
        });
        let draw = |rng: &mut rand_chacha::ChaCha8Rng| normal_vec(rng, b * per);
        let z = draw(&mut rng);
        let eps_f = draw(&mut rng);
        let eps_g = draw(&mut rng);
        let t_f: Vec<f32> = (0..b)
            .map(|_| shift(rng.random::<f32>(), teacher.shift).clamp(1e-3, 1.0))
            .collect();
        let t_g: Vec<f32> = (0..b)
            .map(|_| {
                let u = dc.t_min + (dc.t_max - dc.t_min) * rng.random::<f32>();
                shift(u, teacher.shift)
            })
            .collect();
        let eps_d = draw(&mut rng);
        let t_d: Vec<f32> = (0..b)
            .map(|_| rng.random::<f32>().clamp(1e-3, 1.0))
            .collect();
        // Backward simulation: which of the generator's steps this update trains, and its input
        // made by the generator's own earlier steps (no gradient).
        let times = &dc.generator_times;
        let (x_in, t_in) = if times.len() > 1 {
            let k = rng.random_range(0..times.len());
            let g_sim = g.clone().no_grad();
            let text = g_sim.encode_text(&prompts, &ad);
            let mut x = Tensor::<5>::from_data(TensorData::new(z.clone(), shape), &ad);
            for j in 0..k {
                let x0 = generate_at(&g_sim, x, times[j], &text);
                let eps = Tensor::<5>::from_data(TensorData::new(draw(&mut rng), shape), &ad);
                x = x0 * (1.0 - times[j + 1]) + eps * times[j + 1];
            }
            let v: Vec<f32> = x.into_data().try_to_vec::<f32>().expect("f32");
            (v, times[k])
        } else {
            (z.clone(), 1.0)
        };
        let pair_idx: Vec<usize> = match &data {
            Some(d) => (0..b).map(|_| rng.random_range(0..d.len())).collect(),
            None => Vec::new(),
        };

        // ---- Fake score: the flow-matching loss on the generator's detached samples.
        let g_frozen = g.clone().no_grad();
        let gen_stats = std::sync::Mutex::new((0f64, 0f64, 0usize));
        let gan_d = std::sync::Mutex::new((0f32,));
        let (mut fake_loss, mut f_grads) =
            data_parallel_grads(&fake, b, &shares, |local, lo, hi, dev| {
                let ad = dev.clone();
                let g_frozen = place(&g_frozen, &ad);
                let text = g_frozen.encode_text(&prompts[lo..hi], &ad);
                let x =
                    generate_at(&g_frozen, rows(&x_in, lo, hi, shape, &ad), t_in, &text).detach();
                let v: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().expect("f32");
                {
                    let mut s = gen_stats.lock().unwrap();
                    s.0 += v.iter().map(|&x| x as f64).sum::<f64>();
                    s.1 += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                    s.2 += v.len();
                }
                let ftext = local.encode_text(&prompts[lo..hi], &ad);
                let mut loss = local.backbone.flow_loss(
                    x.clone(),
                    vec![rows(&eps_f, lo, hi, shape, &ad)],
                    entries(&t_f, lo, hi, &ad),
                    &ftext,
                );
                if let (Some(real), true) = (&real_clips, dc.gan_d_weight > 0.0) {
                    // Real against generated, both re-noised with the same draw at t uniform.
                    let t = entries(&t_d, lo, hi, &ad);
                    let eps = rows(&eps_d, lo, hi, shape, &ad);
                    let logit = |c: Tensor<5>| {
                        local.forward(noise(c, eps.clone(), t.clone()).0, t.clone(), &ftext)
                    };
                    let l = (softplus(logit(rows(real, lo, hi, shape, &ad)).neg())
                        + softplus(logit(x)))
                    .mean();
                    let v: f32 = l.clone().detach().into_scalar();
                    gan_d.lock().unwrap().0 += v * (hi - lo) as f32 / b as f32;
                    loss = loss + l * dc.gan_d_weight;
                }
                loss
            });
        run::poison(out, step, &mut f_grads, &mut fake_loss);
        let (f_new, _, f_update) = opt_f.update(
            fake,
            None,
            &f_grads,
            dc.lr_fake,
            dc.grad_clip,
            gate_of(fake_loss, &device),
        );
        let f_stats = f_update.read();
        fake = f_new;
        f_guard.check(
            step,
            fake_loss.is_finite() && f_stats.is_some(),
            fake_loss,
            &progress,
            out,
            saved_step,
        )?;
        let (sum, sq, n) = *gen_stats.lock().unwrap();
        let gen_mean = (sum / n.max(1) as f64) as f32;
        let gen_std = ((sq / n.max(1) as f64) - (gen_mean as f64).powi(2))
            .max(0.0)
            .sqrt() as f32;

        // ---- Generator: distribution matching (+ DMD's regression).
        let (mut dm, mut dm_grad, mut reg, mut g_norm, mut gan_g) = (None, None, None, None, None);
        if dc.generator_step(step) {
            let fake_frozen = fake.clone().no_grad();
            let logs = std::sync::Mutex::new((0f32, 0f32, 0f32, 0f32));
            let (mut g_loss, mut g_grads) =
                data_parallel_grads(&g, b, &shares, |local, lo, hi, dev| {
                    let ad = dev.clone();
                    let fake_frozen = place(&fake_frozen, &ad);
                    let real = real_on.on(&ad);
                    let probe = probe_on.as_ref().map(|p| p.on(&ad));
                    let n = hi - lo;
                    let w = n as f32 / b as f32;
                    let text = local.encode_text(&prompts[lo..hi], &ad);
                    let x = generate_at(local, rows(&x_in, lo, hi, shape, &ad), t_in, &text);
                    let t = entries(&t_g, lo, hi, &ad);
                    let (x_t, _) = noise(
                        x.clone().detach(),
                        rows(&eps_g, lo, hi, shape, &ad),
                        t.clone(),
                    );
                    let rt = real.encode_text(&prompts[lo..hi], &ad);
                    let ru = real.encode_text(&empty[lo..hi], &ad);
                    let v_real = guide(
                        real.forward(x_t.clone(), t.clone(), &rt),
                        real.forward(x_t.clone(), t.clone(), &ru),
                        dc.guidance,
                    );
                    let ft = fake_frozen.encode_text(&prompts[lo..hi], &ad);
                    let v_fake = fake_frozen.backbone.forward(x_t.clone(), t.clone(), &ft);
                    let grad = dm_gradient(
                        x.clone(),
                        clean_prediction(x_t.clone(), v_real, t.clone()),
                        clean_prediction(x_t, v_fake, t),
                    );
                    let g_abs: f32 = grad.clone().abs().mean().into_scalar();
                    let mut loss = dm_loss(x.clone(), grad);
                    let dm_value: f32 = loss.clone().detach().into_scalar();
                    let mut gan_value = 0.0;
                    if dc.gan_g_weight > 0.0 {
                        let t = entries(&t_d, lo, hi, &ad);
                        let (x_d, _) = noise(x, rows(&eps_d, lo, hi, shape, &ad), t.clone());
                        let l = softplus(fake_frozen.forward(x_d, t, &ft).neg()).mean();
                        gan_value = l.clone().detach().into_scalar();
                        loss = loss + l * dc.gan_g_weight;
                    }
                    let mut reg_value = 0.0;
                    if let Some(d) = &data {
                        let idx = &pair_idx[lo..hi];
                        let gather = |v: &[f32]| -> Vec<f32> {
                            idx.iter()
                                .flat_map(|&i| v[i * per..(i + 1) * per].iter().copied())
                                .collect()
                        };
                        let pz = gather(&d.z);
                        let px = gather(&d.x);
                        let caps: Vec<String> =
                            idx.iter().map(|&i| d.captions[i].clone()).collect();
                        let ptext = local.encode_text(&caps, &ad);
                        let sh = [n, shape[1], shape[2], shape[3], shape[4]];
                        let pred = one_step(local, rows(&pz, 0, n, sh, &ad), &ptext);
                        let target = rows(&px, 0, n, sh, &ad);
                        let mut r = (pred.clone() - target.clone()).powi_scalar(2).mean();
                        if let Some(p) = probe {
                            let (fp, _) = p.forward(pred);
                            let (ft, _) = p.forward(target);
                            r = r + (fp - ft.detach()).powi_scalar(2).mean() * dc.probe_weight;
                        }
                        reg_value = r.clone().detach().into_scalar();
                        loss = loss + r * dc.reg_weight;
                    }
                    let mut acc = logs.lock().unwrap();
                    acc.0 += dm_value * w;
                    acc.1 += g_abs * w;
                    acc.2 += reg_value * w;
                    acc.3 += gan_value * w;
                    loss
                });
            run::poison(out, step, &mut g_grads, &mut g_loss);
            let decay = run::ema_decay(dc.ema_decay, step / dc.fake_updates.max(1));
            let (g_new, e, g_update) = opt_g.update(
                g,
                Some((g_ema, decay)),
                &g_grads,
                dc.lr_g,
                dc.grad_clip,
                gate_of(g_loss, &device),
            );
            let g_stats = g_update.read();
            (g, g_ema) = (g_new, e.expect("the EMA comes back"));
            g_guard.check(
                step,
                g_loss.is_finite() && g_stats.is_some(),
                g_loss,
                &progress,
                out,
                saved_step,
            )?;
            let (a, gabs, r, gg) = *logs.lock().unwrap();
            gan_g = (dc.gan_g_weight > 0.0).then_some(gg);
            dm = Some(a);
            dm_grad = Some(gabs);
            reg = data.as_ref().map(|_| r);
            g_norm = g_stats.map(|s| s.grad_norm);
        }
        step += 1;
        progress.advance(step, b);

        if step % dc.log_every == 0 || step == last {
            let m = DmdMetrics {
                step,
                fake_loss,
                dm_loss: dm,
                dm_grad,
                reg_loss: reg,
                gan_d_loss: (dc.gan_d_weight > 0.0).then_some(gan_d.lock().unwrap().0),
                gan_g_loss: gan_g,
                gen_mean,
                gen_std,
                fake_grad_norm: f_stats.map_or(f32::NAN, |s| s.grad_norm),
                g_grad_norm: g_norm,
                clips_per_s: progress.clips_per_s(),
                elapsed_s: progress.elapsed_s(),
                skipped_steps: f_guard.skipped + g_guard.skipped,
            };
            let g_msg = dm.map_or("(fake only)".to_string(), |l| format!("dm {l:.2e}"));
            let msg = format!(
                "fake {fake_loss:.3} {g_msg} · pixels {gen_mean:+.2}±{gen_std:.2} · {:.1} clips/s",
                m.clips_per_s
            );
            let line = format!("step {step}/{} {msg}", dc.steps);
            progress.log(&m, msg, &line)?;
        }
        if step % dc.checkpoint_every == 0 || step == last {
            save(&g, &g_ema, &fake, &opt_g, &opt_f, step)?;
            saved_step = step;
            for (col, file) in [
                ("fake_loss", "fake_loss.png"),
                ("dm_loss", "dm_loss.png"),
                ("gen_mean", "gen_mean.png"),
                ("gen_std", "gen_std.png"),
            ] {
                if !run::column(out, col).is_empty() {
                    run::plot(out, col, file)?;
                }
            }
        }
        if dc.sample_every > 0 && step % dc.sample_every == 0 {
            write_samples(
                &out.join("samples"),
                &format!("step_{step:06}"),
                &g_ema,
                &teacher,
                &cfg.sample_prompts,
                mc.frames,
                &device,
            )?;
        }
    }
    progress.finish();
    write_samples(
        &out.join("samples"),
        &format!("step_{step:06}"),
        &g_ema,
        &teacher,
        &cfg.sample_prompts,
        mc.frames,
        &device,
    )?;
    Ok(g_ema)
}

/// One generator step at time `t`: the clean clip `x − t·v̂(x, t)` (at `t = 1` the one-step
/// generator's `z − v̂(z, 1)`).
fn generate_at(
    model: &Backbone,
    x: Tensor<5>,
    t: f32,
    text: &flick_core::text::TextContext,
) -> Tensor<5> {
    if t == 1.0 {
        return one_step(model, x, text);
    }
    let b = x.dims()[0];
    let tt = Tensor::<1>::full([b], t, &x.device());
    x.clone() - model.forward(x, tt, text) * t
}
