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

impl Generator {
    /// Wrap an in-memory model.
    pub fn new(model: Backbone, info: CheckpointInfo, device: Device) -> Self {
        let shift = info
            .extra
            .get("shift")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0);
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

    /// Steps and guidance the checkpoint recommends: one step, no guidance for a one-step
    /// generator; the tuned values for a teacher.
    pub fn defaults(&self) -> SamplingDefaults {
        let get = |k: &str| self.info.extra.get(k).and_then(|s| s.parse::<f32>().ok());
        if self.info.kind == "generator" {
            SamplingDefaults {
                steps: 1,
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
        let max = self.info.config.text.max_len;
        tokenize(prompt, max).truncated.then(|| format!("prompt longer than the text encoder's {} tokens ({} bytes after BOS/EOS); it was truncated", max, max - 2))
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

    /// The initial noise of a seed: a pure function of the seed, identical on every backend.
    /// The full-size clip's values first, then (nested U-Net) each smaller resolution's.
    pub fn noise(&self, seed: u64) -> Vec<f32> {
        let c = &self.info.config;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        normal_vec(&mut rng, c.noise_len(c.frames))
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
        mut on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor<5>, Error> {
        if steps == 0 {
            return Err(Error::Config("steps must be ≥ 1".into()));
        }
        if !guidance.is_finite() {
            return Err(Error::Config(format!(
                "guidance must be a finite number, got {guidance}"
            )));
        }
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
        let device = &self.device;
        // One state per resolution (the nested U-Net denoises all of them jointly), each from
        // its part of every clip's noise.
        let mut offset = 0;
        let mut xs: Vec<Tensor<5>> = c
            .level_sizes()
            .into_iter()
            .map(|[h, w]| {
                let n = 3 * c.frames * h * w;
                let values: Vec<f32> = z
                    .chunks(per_clip)
                    .flat_map(|clip| clip[offset..offset + n].iter().copied())
                    .collect();
                offset += n;
                Tensor::<5>::from_data(TensorData::new(values, [b, 3, c.frames, h, w]), device)
            })
            .collect();
        let text = self.encode(prompts, guidance);
        let flow = FlowConfig {
            shift: self.shift,
            ..FlowConfig::default()
        };
        let times = flow.sampling_times(steps);
        if xs.len() == 1 {
            let out = euler(xs.remove(0), &times, |x, t, i| {
                let v = self.velocity(x, t, &text, guidance);
                on_step(i + 1, steps);
                v
            });
            return Ok(out);
        }
        // Euler on every level with its own times (the same grid on the full size's t).
        for (i, pair) in times.windows(2).enumerate() {
            let (t, t_next) = (pair[0], pair[1]);
            let vs = self.velocity_levels(xs.clone(), t, &text, guidance);
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
        if steps == 0 {
            return Err(Error::Config("steps must be ≥ 1".into()));
        }
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

/// RGBA8 frames of `[B, 3, T, H, W]` clips → videos.
fn to_videos([_, _, t, h, w]: [usize; 5], frames: Vec<Vec<u8>>) -> Vec<Video> {
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
