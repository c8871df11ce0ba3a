//! Prompt + seed → clip. The same call serves the multi-step teacher (Euler over the flow with
//! classifier-free guidance) and a one-step generator, which is the model used as
//! `G(z, c) = z − v̂(z, c, t = 1)`: exactly one Euler step from t = 1 to 0.

use std::path::Path;

use burn::prelude::*;
use rand::SeedableRng;

use crate::Error;
use crate::checkpoint::{CheckpointInfo, load_model, load_model_bytes};
use crate::data::Clip;
use crate::flow::{FlowConfig, euler, guide, normal_vec};
use crate::model::Backbone;
use crate::text::tokenize;
use crate::video::Video;

/// A loaded model ready to generate.
#[derive(Debug)]
pub struct Generator {
    pub model: Backbone,
    pub info: CheckpointInfo,
    pub device: Device,
    /// The timestep shift the model was trained with (checkpoint metadata `shift`, default 1).
    pub shift: f32,
}

/// The default sampling settings recorded in a checkpoint (or sensible ones if absent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingDefaults {
    pub steps: usize,
    pub guidance: f32,
}

/// The most denoising steps a sampler takes (its clips stop changing long before: a guard
/// against a typo that would run for hours).
pub const MAX_STEPS: usize = 1000;
/// The largest classifier-free guidance scale a sampler accepts.
pub const MAX_GUIDANCE: f32 = 100.0;

/// Sampling settings in range: `steps` in 1..=[`MAX_STEPS`], `guidance` finite in
/// 0..=[`MAX_GUIDANCE`].
pub fn check_sampling(steps: usize, guidance: f32) -> Result<(), Error> {
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(Error::Config(format!(
            "steps must be from 1 to {MAX_STEPS}, got {steps}"
        )));
    }
    if !(guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&guidance)) {
        return Err(Error::Config(format!(
            "guidance must be a number from 0 to {MAX_GUIDANCE}, got {guidance}"
        )));
    }
    Ok(())
}

impl CheckpointInfo {
    /// The timestep shift the model was trained with (metadata `shift`, default 1).
    pub fn shift(&self) -> f32 {
        self.extra
            .get("shift")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0)
    }

    /// The times of a multi-step generator's denoise/re-noise steps (metadata `times`, e.g.
    /// `1,0.75,0.5,0.25`, as DMD2 trains them with backward simulation); `None` for a teacher or
    /// a one-step generator.
    pub fn generator_times(&self) -> Option<Vec<f32>> {
        if self.kind != "generator" {
            return None;
        }
        let times: Vec<f32> = self
            .extra
            .get("times")?
            .split(',')
            .map(|s| s.trim().parse().ok())
            .collect::<Option<_>>()?;
        (times.len() > 1).then_some(times)
    }

    /// Steps and guidance the checkpoint recommends: one step (a multi-step generator: its
    /// steps), no guidance for a generator; the tuned values for a teacher.
    pub fn sampling_defaults(&self) -> SamplingDefaults {
        let get = |k: &str| self.extra.get(k).and_then(|s| s.parse::<f32>().ok());
        if self.kind == "generator" {
            SamplingDefaults {
                steps: self.generator_times().map_or(1, |t| t.len()),
                guidance: get("guidance").unwrap_or(1.0),
            }
        } else {
            SamplingDefaults {
                steps: get("steps").map(|s| s as usize).unwrap_or(25),
                guidance: get("guidance").unwrap_or(3.0),
            }
        }
    }

    /// A message if the prompt will be cut to the text encoder's length (`None` if it fits).
    pub fn prompt_warning(&self, prompt: &str) -> Option<String> {
        let max = self.config.text.max_len;
        tokenize(prompt, max).truncated.then(|| format!("prompt longer than the text encoder's {} tokens ({} bytes after BOS/EOS); it was truncated", max, max - 2))
    }

    /// The initial noise of a seed: a pure function of the seed, identical on every backend (and
    /// every engine). The full-size clip's values first, then (nested U-Net) each smaller
    /// resolution's.
    pub fn noise(&self, seed: u64) -> Vec<f32> {
        let c = &self.config;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        normal_vec(&mut rng, c.noise_len(c.frames))
    }
}

impl Generator {
    /// Wrap an in-memory model.
    pub fn new(model: Backbone, info: CheckpointInfo, device: Device) -> Self {
        let shift = info.shift();
        Self {
            model,
            info,
            device,
            shift,
        }
    }

    /// Load a checkpoint file onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, Error> {
        let (model, info) = load_model(path, device)?;
        Ok(Self::new(model, info, device.clone()))
    }

    /// Load a checkpoint from memory (the browser, bundled bytes).
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, Error> {
        let (model, info) = load_model_bytes(bytes, device).map_err(Error::Checkpoint)?;
        Ok(Self::new(model, info, device.clone()))
    }

    /// The times of a multi-step generator's steps ([`CheckpointInfo::generator_times`]).
    pub fn generator_times(&self) -> Option<Vec<f32>> {
        self.info.generator_times()
    }

    /// Steps and guidance the checkpoint recommends ([`CheckpointInfo::sampling_defaults`]).
    pub fn defaults(&self) -> SamplingDefaults {
        self.info.sampling_defaults()
    }

    /// A message if the prompt will be cut to the text encoder's length (`None` if it fits).
    pub fn prompt_warning(&self, prompt: &str) -> Option<String> {
        self.info.prompt_warning(prompt)
    }

    /// Generate one clip. `steps ≥ 1`; `guidance = 1` disables classifier-free guidance.
    pub fn generate(
        &self,
        prompt: &str,
        seed: u64,
        steps: usize,
        guidance: f32,
    ) -> Result<Video, Error> {
        Ok(self
            .generate_videos(&[prompt.to_string()], &[seed], steps, guidance, |_, _| {})?
            .remove(0))
    }

    /// The initial noise of a seed ([`CheckpointInfo::noise`]).
    pub fn noise(&self, seed: u64) -> Vec<f32> {
        self.info.noise(seed)
    }

    /// Generate a batch (one clip per prompt/seed pair); `on_step(i, steps)` after each step.
    pub fn generate_clips(
        &self,
        prompts: &[String],
        seeds: &[u64],
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Vec<Clip>, Error> {
        let z: Vec<f32> = seeds.iter().flat_map(|&s| self.noise(s)).collect();
        let x = self.sample(prompts, z, steps, guidance, on_step)?;
        Ok(self.to_clips(x))
    }

    /// [`Self::generate_clips`] for the browser, where reading a GPU tensor back must be
    /// asynchronous (a synchronous read panics on WebGPU).
    pub async fn generate_clips_async(
        &self,
        prompts: &[String],
        seeds: &[u64],
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Vec<Clip>, Error> {
        let z: Vec<f32> = seeds.iter().flat_map(|&s| self.noise(s)).collect();
        let x = self.sample(prompts, z, steps, guidance, on_step)?;
        self.to_clips_async(x).await
    }

    /// [`Self::generate_clips`] straight to RGBA8 frames for display; on a GPU the conversion
    /// runs there (`flick_shaders::clip_pixels`) and only the packed pixels are read back.
    pub fn generate_videos(
        &self,
        prompts: &[String],
        seeds: &[u64],
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Vec<Video>, Error> {
        let z: Vec<f32> = seeds.iter().flat_map(|&s| self.noise(s)).collect();
        let x = self.sample(prompts, z, steps, guidance, on_step)?;
        let dims = x.dims();
        let frames = flick_shaders::clip_pixels(x)
            .map_err(|e| Error::Device(format!("reading the clips back failed: {e}")))?;
        Ok(to_videos(dims, frames))
    }

    /// [`Self::generate_videos`] for the browser (asynchronous read-back).
    pub async fn generate_videos_async(
        &self,
        prompts: &[String],
        seeds: &[u64],
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Vec<Video>, Error> {
        let z: Vec<f32> = seeds.iter().flat_map(|&s| self.noise(s)).collect();
        let x = self.sample(prompts, z, steps, guidance, on_step)?;
        let dims = x.dims();
        let frames = flick_shaders::clip_pixels_async(x)
            .await
            .map_err(|e| Error::Device(format!("reading the clips back failed: {e}")))?;
        Ok(to_videos(dims, frames))
    }

    /// Run the sampler from given noise `z` (`B·3·T·H·W` values). Returns `[B, 3, T, H, W]`.
    pub fn sample(
        &self,
        prompts: &[String],
        z: Vec<f32>,
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor<5>, Error> {
        check_sampling(steps, guidance)?;
        let c = &self.info.config;
        let b = prompts.len();
        let per_clip = c.noise_len(c.frames);
        if z.len() != b * per_clip {
            return Err(Error::Config(format!(
                "noise has {} values, expected {} for {b} clips of {}×{}×{} ({} values each)",
                z.len(),
                b * per_clip,
                c.frames,
                c.height,
                c.width,
                per_clip
            )));
        }
        let xs = self.level_inputs(&z, b);
        let text = self.encode(prompts, guidance);
        self.sample_text(xs, &z, &text, steps, guidance, on_step)
    }

    /// The sampler from every level's noisy start `xs` (and the flat noise `z` they came from)
    /// for an encoded context ([`Self::encode`], or a blend of contexts).
    fn sample_text(
        &self,
        mut xs: Vec<Tensor<5>>,
        z: &[f32],
        text: &crate::text::TextContext,
        steps: usize,
        guidance: f32,
        mut on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor<5>, Error> {
        let flow = FlowConfig {
            shift: self.shift,
            ..FlowConfig::default()
        };
        if let Some(times) = self
            .generator_times()
            .filter(|_| steps > 1 && xs.len() == 1)
        {
            if steps != times.len() {
                return Err(Error::Config(format!(
                    "this generator makes a clip in 1 or {} steps (at t = {times:?}), not {steps}",
                    times.len()
                )));
            }
            return Ok(self.denoise_renoise(xs.remove(0), z, &times, text, guidance, on_step));
        }
        let times = flow.sampling_times(steps);
        if xs.len() == 1 {
            let out = euler(xs.remove(0), &times, |x, t, i| {
                let v = self.velocity(x, t, text, guidance);
                on_step(i + 1, steps);
                v
            });
            return Ok(out);
        }
        // Euler on every level with its own times (the same grid on the full size's t).
        for (i, pair) in times.windows(2).enumerate() {
            let (t, t_next) = (pair[0], pair[1]);
            let vs = self.velocity_levels(xs.clone(), t, text, guidance);
            xs = xs
                .into_iter()
                .zip(vs)
                .enumerate()
                .map(|(r, (x, v))| {
                    x + v * (self.model.level_time(t_next, r) - self.model.level_time(t, r))
                })
                .collect();
            on_step(i + 1, steps);
        }
        Ok(xs.swap_remove(0))
    }

    /// Every resolution's start `[B, 3, T, h, w]` from the flat per-clip noise `z` (the nested
    /// U-Net denoises all of them jointly, each from its part of every clip's noise).
    fn level_inputs(&self, z: &[f32], b: usize) -> Vec<Tensor<5>> {
        let c = &self.info.config;
        let per_clip = c.noise_len(c.frames);
        let mut offset = 0;
        c.level_sizes()
            .into_iter()
            .map(|[h, w]| {
                let n = 3 * c.frames * h * w;
                let values: Vec<f32> = z
                    .chunks(per_clip)
                    .flat_map(|clip| clip[offset..offset + n].iter().copied())
                    .collect();
                offset += n;
                Tensor::<5>::from_data(
                    TensorData::new(values, [b, 3, c.frames, h, w]),
                    &self.device,
                )
            })
            .collect()
    }

    /// The clip at a point between latent corners ([`LatentPoint`]): the seeds' noises
    /// interpolated spherically, the prompts' encodings blended with the same weights.
    pub fn explore(
        &self,
        point: &LatentPoint,
        steps: usize,
        guidance: f32,
    ) -> Result<Video, Error> {
        let x = self.explore_tensor(point, steps, guidance)?;
        let dims = x.dims();
        let frames = flick_shaders::clip_pixels(x)
            .map_err(|e| Error::Device(format!("reading the clip back failed: {e}")))?;
        Ok(to_videos(dims, frames).remove(0))
    }

    /// [`Self::explore`] for the browser (asynchronous read-back).
    pub async fn explore_async(
        &self,
        point: &LatentPoint,
        steps: usize,
        guidance: f32,
    ) -> Result<Video, Error> {
        let x = self.explore_tensor(point, steps, guidance)?;
        let dims = x.dims();
        let frames = flick_shaders::clip_pixels_async(x)
            .await
            .map_err(|e| Error::Device(format!("reading the clip back failed: {e}")))?;
        Ok(to_videos(dims, frames).remove(0))
    }

    fn explore_tensor(
        &self,
        point: &LatentPoint,
        steps: usize,
        guidance: f32,
    ) -> Result<Tensor<5>, Error> {
        check_sampling(steps, guidance)?;
        let weights = point.weights()?;
        let noises: Vec<Vec<f32>> = point.corners.iter().map(|(_, s)| self.noise(*s)).collect();
        let z = point.noise(&noises)?;
        let prompts: Vec<String> = point.corners.iter().map(|(p, _)| p.clone()).collect();
        let n = prompts.len();
        let all = self.encode(&prompts, guidance);
        let lens: Vec<usize> =
            crate::text::tokenize_batch(&prompts, self.info.config.text.max_len).1;
        let cond = blend_text(&all, 0, n, &weights, &lens, &self.device);
        let text = if guidance != 1.0 {
            // The unconditional rows are all the empty prompt's: any one of them.
            let uncond = crate::text::TextContext {
                tokens: all.tokens.narrow(0, n, 1),
                bias: all.bias.narrow(0, n, 1),
                pooled: all.pooled.narrow(0, n, 1),
            };
            crate::text::TextContext {
                tokens: Tensor::cat(vec![cond.tokens, uncond.tokens], 0),
                bias: Tensor::cat(vec![cond.bias, uncond.bias], 0),
                pooled: Tensor::cat(vec![cond.pooled, uncond.pooled], 0),
            }
        } else {
            cond
        };
        let xs = self.level_inputs(&z, 1);
        self.sample_text(xs, &z, &text, steps, guidance, |_, _| {})
    }

    /// A multi-step generator's sampler (DMD2): at each time `t_k` the generator's clean clip
    /// `x̂0 = x − t_k·v̂(x, t_k)`, re-noised to the next time with fresh noise,
    /// `x = (1 − t_{k+1})·x̂0 + t_{k+1}·ε_k`; the last `x̂0` is the clip. Each clip's `ε_k` is a
    /// function of its own input noise `z`, so a clip depends on its seed alone.
    fn denoise_renoise(
        &self,
        mut x: Tensor<5>,
        z: &[f32],
        times: &[f32],
        text: &crate::text::TextContext,
        guidance: f32,
        mut on_step: impl FnMut(usize, usize),
    ) -> Tensor<5> {
        let dims = x.dims();
        let per: usize = dims[1..].iter().product();
        let k_max = times.len();
        for (k, &t) in times.iter().enumerate() {
            let v = self.velocity(x.clone(), t, text, guidance);
            let x0 = x - v * t;
            on_step(k + 1, k_max);
            if k + 1 == k_max {
                return x0;
            }
            let eps = renoise_draws(z, per, k);
            let eps = Tensor::<5>::from_data(TensorData::new(eps, dims), &self.device);
            let next = times[k + 1];
            x = x0 * (1.0 - next) + eps * next;
        }
        unreachable!("at least two times")
    }

    /// [`Self::velocity`] for every resolution of a multi-resolution backbone.
    fn velocity_levels(
        &self,
        xs: Vec<Tensor<5>>,
        t: f32,
        text: &crate::text::TextContext,
        guidance: f32,
    ) -> Vec<Tensor<5>> {
        let b = xs[0].dims()[0];
        let device = &self.device;
        if guidance != 1.0 {
            let xx = xs
                .into_iter()
                .map(|x| Tensor::cat(vec![x.clone(), x], 0))
                .collect();
            let vs = self
                .model
                .forward_levels(xx, Tensor::<1>::full([2 * b], t, device), text);
            vs.into_iter()
                .map(|v| guide(v.clone().narrow(0, 0, b), v.narrow(0, b, b), guidance))
                .collect()
        } else {
            self.model
                .forward_levels(xs, Tensor::<1>::full([b], t, device), text)
        }
    }

    /// SDEdit-style re-generation: noise clean clips `x0` `[B, 3, T, H, W]` with `eps` to
    /// `t_start` and run the sampler from there (the schedule's times below `t_start`). Shows
    /// which noise levels a model handles: from low `t_start` a good model returns the clip;
    /// from high `t_start` it must redraw it from the prompt.
    pub fn resample(
        &self,
        prompts: &[String],
        x0: Tensor<5>,
        eps: Tensor<5>,
        t_start: f32,
        steps: usize,
        guidance: f32,
    ) -> Result<Tensor<5>, Error> {
        if !(0.0..=1.0).contains(&t_start) || steps == 0 {
            return Err(Error::Config(format!(
                "resample needs t_start in [0, 1] and steps ≥ 1 (got {t_start}, {steps})"
            )));
        }
        let b = prompts.len();
        let (x, _) = crate::flow::noise(x0, eps, Tensor::<1>::full([b], t_start, &self.device));
        let text = self.encode(prompts, guidance);
        let flow = FlowConfig {
            shift: self.shift,
            ..FlowConfig::default()
        };
        let mut times = vec![t_start];
        times.extend(
            flow.sampling_times(steps)
                .into_iter()
                .filter(|&t| t < t_start),
        );
        Ok(euler(x, &times, |x, t, _| {
            self.velocity(x, t, &text, guidance)
        }))
    }

    /// Text context for a batch: the prompts, then (when guided) as many empty prompts.
    fn encode(&self, prompts: &[String], guidance: f32) -> crate::text::TextContext {
        if guidance != 1.0 {
            let mut all = prompts.to_vec();
            all.extend(std::iter::repeat_n(String::new(), prompts.len()));
            self.model.encode_text(&all, &self.device)
        } else {
            self.model.encode_text(prompts, &self.device)
        }
    }

    /// The (guided) velocity at `x` `[B, 3, T, H, W]`, time `t`, for a context from [`Self::encode`].
    fn velocity(
        &self,
        x: Tensor<5>,
        t: f32,
        text: &crate::text::TextContext,
        guidance: f32,
    ) -> Tensor<5> {
        let b = x.dims()[0];
        let device = &self.device;
        if guidance != 1.0 {
            let xx = Tensor::cat(vec![x.clone(), x], 0);
            let v = self
                .model
                .forward(xx, Tensor::<1>::full([2 * b], t, device), text);
            let (vc, vu) = (v.clone().narrow(0, 0, b), v.narrow(0, b, b));
            guide(vc, vu, guidance)
        } else {
            self.model
                .forward(x, Tensor::<1>::full([b], t, device), text)
        }
    }

    /// What the sampler believes the clean clip is at each step: `x̂0 = x_t − t·v̂` for every
    /// time of the Euler schedule, with that time. For looking at how a sample forms (where
    /// an object appears, when it breaks up or fades).
    pub fn denoised_trajectory(
        &self,
        prompt: &str,
        seed: u64,
        steps: usize,
        guidance: f32,
    ) -> Result<Vec<(f32, Clip)>, Error> {
        check_sampling(steps, guidance)?;
        let c = &self.info.config;
        let mut z = self.noise(seed);
        z.truncate(3 * c.frames * c.height * c.width); // the full-size part
        let x = Tensor::<5>::from_data(
            TensorData::new(z, [1, 3, c.frames, c.height, c.width]),
            &self.device,
        );
        let text = self.encode(&[prompt.to_string()], guidance);
        let flow = FlowConfig {
            shift: self.shift,
            ..FlowConfig::default()
        };
        let times = flow.sampling_times(steps);
        let mut out = Vec::with_capacity(steps);
        euler(x, &times, |x, t, _| {
            let v = self.velocity(x.clone(), t, &text, guidance);
            out.push((t, self.to_clips(x - v.clone() * t).remove(0)));
            v
        });
        Ok(out)
    }

    /// Read a `[B, 3, T, H, W]` tensor back as clips (synchronous read: not for the browser).
    pub fn to_clips(&self, x: Tensor<5>) -> Vec<Clip> {
        let dims = x.dims();
        split_clips(x.into_data().try_to_vec::<f32>().expect("f32 data"), dims)
    }

    /// [`Self::to_clips`] with an asynchronous read-back (the browser).
    pub async fn to_clips_async(&self, x: Tensor<5>) -> Result<Vec<Clip>, Error> {
        let dims = x.dims();
        let data = x
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading the clips back failed: {e:?}")))?;
        let values = data
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("clips are not f32: {e:?}")))?;
        Ok(split_clips(values, dims))
    }
}

/// A point between two or four latent corners, each a prompt and a seed: the clip made from the
/// corners' noises interpolated spherically (slerp keeps the noise at unit scale, where a
/// straight average of two independent noises has a norm ≈ 0.71× too small) and from their
/// prompts' encodings blended with the same weights. Two corners: `at[0]` ∈ [0, 1] from the
/// first to the second (`at[1]` unused). Four corners (a square: `[0, 0], [1, 0], [0, 1],
/// [1, 1]`): `at` = (u, v), bilinear — slerp along u on both edges, then along v. At a corner
/// the clip is that corner's prompt and seed exactly as [`Generator::generate_videos`] makes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatentPoint {
    pub corners: Vec<(String, u64)>,
    pub at: [f32; 2],
}

impl LatentPoint {
    fn check(&self) -> Result<(), Error> {
        if !matches!(self.corners.len(), 2 | 4) {
            return Err(Error::Config(format!(
                "a latent point needs 2 or 4 corners, got {}",
                self.corners.len()
            )));
        }
        if !self
            .at
            .iter()
            .all(|a| a.is_finite() && (0.0..=1.0).contains(a))
        {
            return Err(Error::Config(format!(
                "a latent point's position must be in [0, 1], got {:?}",
                self.at
            )));
        }
        Ok(())
    }

    /// The corners' weights for blending the text (bilinear; they sum to 1).
    pub fn weights(&self) -> Result<Vec<f32>, Error> {
        self.check()?;
        let [u, v] = self.at;
        Ok(if self.corners.len() == 2 {
            vec![1.0 - u, u]
        } else {
            vec![(1.0 - u) * (1.0 - v), u * (1.0 - v), (1.0 - u) * v, u * v]
        })
    }

    /// The noise at this point from the corners' noises (in corner order).
    pub fn noise(&self, corners: &[Vec<f32>]) -> Result<Vec<f32>, Error> {
        self.check()?;
        if corners.windows(2).any(|w| w[0].len() != w[1].len()) {
            return Err(Error::Config(format!(
                "corner noises of different lengths: {:?}",
                corners.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        let [u, v] = self.at;
        Ok(match corners {
            [a, b] => slerp(a, b, u),
            [a, b, c, d] => slerp(&slerp(a, b, u), &slerp(c, d, u), v),
            _ => {
                return Err(Error::Config(format!(
                    "{} noises for {} corners",
                    corners.len(),
                    self.corners.len()
                )));
            }
        })
    }
}

/// Spherical interpolation of two noise vectors, `s` ∈ [0, 1]: along the great circle between
/// their directions (the angle from their normalised dot product), exactly `a` at 0 and `b` at 1;
/// a straight line when they are (nearly) parallel.
pub fn slerp(a: &[f32], b: &[f32], s: f32) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "slerp of vectors of different lengths");
    if s <= 0.0 {
        return a.to_vec();
    }
    if s >= 1.0 {
        return b.to_vec();
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = (dot / (na * nb).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let s = s as f64;
    let (wa, wb) = if theta.sin().abs() < 1e-6 {
        (1.0 - s, s)
    } else {
        (
            ((1.0 - s) * theta).sin() / theta.sin(),
            (s * theta).sin() / theta.sin(),
        )
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| (wa * *x as f64 + wb * *y as f64) as f32)
        .collect()
}

/// One context row blended from rows `first..first + weights.len()` of `all`: token features and
/// pooled features averaged with `weights`; a token position attends with weight Σ w_i over the
/// prompts that have a token there (bias `ln Σ w_i`, −1e4 where none has), so a corner's own
/// context comes back exactly at its corner and a longer prompt's extra tokens fade in.
fn blend_text(
    all: &crate::text::TextContext,
    first: usize,
    n: usize,
    weights: &[f32],
    lens: &[usize],
    device: &Device,
) -> crate::text::TextContext {
    let [_, l, dim] = all.tokens.dims();
    let w = Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [n]), device);
    let tokens = (all.tokens.clone().narrow(0, first, n) * w.clone().reshape([n, 1, 1])).sum_dim(0); // [1, L, dim]
    let pooled = (all.pooled.clone().narrow(0, first, n) * w.reshape([n, 1])).sum_dim(0);
    let bias = blend_bias(weights, lens, l);
    crate::text::TextContext {
        tokens: tokens.reshape([1, l, dim]),
        bias: Tensor::from_data(TensorData::new(bias, [1, l]), device),
        pooled: pooled.reshape([1, dim]),
    }
}

/// The attention bias `[L]` of prompts blended with `weights` (their token counts `lens`): a
/// token position attends with weight Σ w_i over the prompts that have a token there (bias
/// `ln Σ w_i`), −1e4 where none has.
pub fn blend_bias(weights: &[f32], lens: &[usize], l: usize) -> Vec<f32> {
    (0..l)
        .map(|j| {
            let m: f32 = weights
                .iter()
                .zip(lens)
                .filter(|(_, len)| j < **len)
                .map(|(w, _)| *w)
                .sum();
            if m > 0.0 { m.ln() } else { -1e4 }
        })
        .collect()
}

/// RGBA8 frames of `[B, 3, T, H, W]` clips → videos.
pub fn to_videos([_, _, t, h, w]: [usize; 5], frames: Vec<Vec<u8>>) -> Vec<Video> {
    frames
        .into_iter()
        .map(|rgba| Video {
            frames: t,
            height: h,
            width: w,
            rgba,
        })
        .collect()
}

/// `[B, 3, T, H, W]` values → `B` clips.
fn split_clips(data: Vec<f32>, [b, _, t, h, w]: [usize; 5]) -> Vec<Clip> {
    let n = 3 * t * h * w;
    (0..b)
        .map(|i| Clip {
            data: data[i * n..(i + 1) * n].to_vec(),
            frames: t,
            height: h,
            width: w,
        })
        .collect()
}

/// The re-noising draws of step `k` for every clip of the batch noise `z` (`per` values a clip):
/// each clip's from a generator seeded by its own noise's first values and `k`.
pub fn renoise_draws(z: &[f32], per: usize, k: usize) -> Vec<f32> {
    z.chunks(per)
        .flat_map(|clip| {
            let seed = clip
                .iter()
                .take(8)
                .fold(0x9e37_79b9_7f4a_7c15u64 ^ (k as u64 + 1), |h, v| {
                    (h ^ v.to_bits() as u64).wrapping_mul(0x1000_0000_01b3)
                });
            normal_vec(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), per)
        })
        .collect()
}
