//! `flick-direct`: Flick's DiT generator and teacher run by Flick's own WGSL kernels
//! (`shaders/kernels/*.wgsl`), launched through wgpu directly — no burn, no cubecl.
//!
//! It is the browser page's WebGPU engine: a WebGPU engine built on burn's wgpu backend is 11 MB
//! of WebAssembly (cubecl's compiler, autotuner and every kernel family burn may pick at run
//! time); this one, 0.55 MB, is the model's own forward pass and nothing else. The same checkpoints, the same
//! noise for a seed, the same sampler (Euler with classifier-free guidance, the one-step
//! generator's single step, DMD2's denoise/re-noise steps, the explorer's blends) as
//! `flick_core::generate::Generator`, which is its reference (`tests/parity.rs`: the clip
//! within 1/255 of burn's on the CPU). It runs the DiT backbone with full attention (the
//! bundled models); other backbones are refused with a message naming the engines that run them.
//!
//! The forward pass, per DiT block: one dense-layer kernel for q, k and v together, Flick's fused
//! attention kernel, adaLN (layer norm + modulation) in one kernel, the gated residual in one;
//! cross-attention keys and values are computed once per prompt, not once per step.

mod gpu;
mod model;
mod ops;

pub use gpu::{Buf, Gpu};
pub use model::{Dit, Text, check_supported};
pub use ops::Act;
/// The wgpu this crate runs on (for `Gpu::open`'s backends and `Gpu::from_adapter`).
pub use wgpu;

use flick_core::checkpoint::{CheckpointInfo, info_from_metadata, read_safetensors_bytes};
use flick_core::flow::FlowConfig;
use flick_core::generate::{
    LatentPoint, SamplingDefaults, blend_bias, check_sampling, renoise_draws, to_videos,
};
use flick_core::video::Video;

/// A model loaded on a GPU, ready to generate (the direct engine's
/// `flick_core::generate::Generator`).
pub struct Generator {
    pub model: Dit,
    pub info: CheckpointInfo,
    gpu: std::rc::Rc<Gpu>,
}

impl Generator {
    /// Load a checkpoint from memory (f32, f16 or 8-bit, as `flick convert` writes them).
    pub fn from_bytes(bytes: &[u8], gpu: &std::rc::Rc<Gpu>) -> Result<Self, String> {
        let (tensors, meta) = read_safetensors_bytes(bytes)?;
        let info = info_from_metadata(&meta)?;
        let model = Dit::new(gpu, info.clone(), tensors)?;
        Ok(Self {
            model,
            info,
            gpu: gpu.clone(),
        })
    }

    /// Steps and guidance the checkpoint recommends.
    pub fn defaults(&self) -> SamplingDefaults {
        self.info.sampling_defaults()
    }

    fn shape(&self, b: usize) -> [usize; 5] {
        let c = &self.info.config;
        [b, 3, c.frames, c.height, c.width]
    }

    /// One clip per prompt/seed pair as RGBA8 frames; `on_step(i, steps)` after each step is
    /// recorded (the GPU runs them when the clips are read).
    pub async fn generate_videos_async(
        &self,
        prompts: &[String],
        seeds: &[u64],
        steps: usize,
        guidance: f32,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Vec<Video>, String> {
        check_sampling(steps, guidance).map_err(|e| e.to_string())?;
        if prompts.len() != seeds.len() || prompts.is_empty() {
            return Err(format!(
                "{} prompts for {} seeds: one of each per clip",
                prompts.len(),
                seeds.len()
            ));
        }
        let z: Vec<f32> = seeds.iter().flat_map(|&s| self.info.noise(s)).collect();
        let text = self.encode(prompts, guidance);
        let x = self.sample(&z, prompts.len(), &text, steps, guidance, on_step)?;
        self.videos(&x, prompts.len()).await
    }

    /// Compile every kernel a generation of `steps` steps with `guidance` runs, without running
    /// one: the launches of one clip are recorded, then dropped. Pipelines do not depend on the
    /// batch, so one clip compiles what any batch needs. Returns once the device has compiled them
    /// (a kernel the adapter refuses is an error here, not a failure later).
    pub async fn warm_up(&self, steps: usize, guidance: f32) -> Result<(), String> {
        check_sampling(steps, guidance).map_err(|e| e.to_string())?;
        let gpu = &*self.gpu;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let prompts = ["warm-up".to_string()];
        let text = self.encode(&prompts, guidance);
        let sampled = self
            .sample(&self.info.noise(0), 1, &text, steps, guidance, |_, _| {})
            .map(|x| gpu.clip_pixels(&x, self.shape(1)));
        gpu.discard();
        if let Some(e) = scope.pop().await {
            return Err(format!("the adapter refused a kernel: {e}"));
        }
        sampled.map(drop)
    }

    /// The clip at a point between latent corners (`Generator::explore` of flick-core).
    pub async fn explore_async(
        &self,
        point: &LatentPoint,
        steps: usize,
        guidance: f32,
    ) -> Result<Video, String> {
        check_sampling(steps, guidance).map_err(|e| e.to_string())?;
        let e = |e: flick_core::Error| e.to_string();
        let weights = point.weights().map_err(e)?;
        let noises: Vec<Vec<f32>> = point
            .corners
            .iter()
            .map(|(_, s)| self.info.noise(*s))
            .collect();
        let z = point.noise(&noises).map_err(e)?;
        let prompts: Vec<String> = point.corners.iter().map(|(p, _)| p.clone()).collect();
        let n = prompts.len();
        let all = self.encode(&prompts, guidance);
        let c = &self.info.config;
        let (l, td) = (c.text.max_len, c.text.dim);
        let lens = flick_core::text::tokenize_batch(&prompts, l).1;
        let guided = guidance != 1.0;
        let rows = 1 + guided as usize;
        // Row 0: the corners' encodings blended with the weights; row 1 (guided): the empty
        // prompt's (any of the unconditional rows).
        let gpu = &*self.gpu;
        let tokens = gpu.alloc(rows * l * td);
        let pooled = gpu.alloc(rows * td);
        for (i, &w) in weights.iter().enumerate() {
            let keep = if i == 0 { 0.0 } else { 1.0 };
            gpu.axpby_into(
                Some(&tokens),
                l * td,
                w,
                (&all.tokens, i * l * td),
                keep,
                (&tokens, 0),
                l * td,
                0,
            );
            gpu.axpby_into(
                Some(&pooled),
                td,
                w,
                (&all.pooled, i * td),
                keep,
                (&pooled, 0),
                td,
                0,
            );
        }
        let mut bias = blend_bias(&weights, &lens, l);
        if guided {
            gpu.copy(
                &all.tokens,
                &tokens,
                1,
                l * td,
                (0, n * l * td),
                (0, l * td),
            );
            gpu.copy(&all.pooled, &pooled, 1, td, (0, n * td), (0, td));
            let empty = flick_core::text::tokenize("", l).len;
            bias.extend((0..l).map(|j| if j < empty { 0.0 } else { -1e4 }));
        }
        let text = self
            .model
            .with_cross(gpu, rows, tokens, gpu.upload(&bias), pooled);
        let x = self.sample(&z, 1, &text, steps, guidance, |_, _| {})?;
        Ok(self.videos(&x, 1).await?.remove(0))
    }

    /// The prompts' context, then (guided) as many empty prompts'.
    fn encode(&self, prompts: &[String], guidance: f32) -> Text {
        let mut all = prompts.to_vec();
        if guidance != 1.0 {
            all.extend(std::iter::repeat_n(String::new(), prompts.len()));
        }
        self.model.encode(&self.gpu, &all)
    }

    /// The sampler from noise `z` (`b` clips) — `Generator::sample_text` of flick-core.
    fn sample(
        &self,
        z: &[f32],
        b: usize,
        text: &Text,
        steps: usize,
        guidance: f32,
        mut on_step: impl FnMut(usize, usize),
    ) -> Result<Buf, String> {
        let gpu = &*self.gpu;
        let mut x = gpu.upload(z);
        if let Some(times) = self.info.generator_times().filter(|_| steps > 1) {
            if steps != times.len() {
                return Err(format!(
                    "this generator makes a clip in 1 or {} steps (at t = {times:?}), not {steps}",
                    times.len()
                ));
            }
            for (k, &t) in times.iter().enumerate() {
                let v = self.velocity(&x, t, text, guidance);
                let x0 = gpu.axpby(1.0, &x, -t, &v);
                on_step(k + 1, times.len());
                match times.get(k + 1) {
                    None => return Ok(x0),
                    Some(&next) => {
                        let eps = gpu.upload(&renoise_draws(z, z.len() / b, k));
                        x = gpu.axpby(1.0 - next, &x0, next, &eps);
                    }
                }
            }
        }
        let flow = FlowConfig {
            shift: self.info.shift(),
            ..FlowConfig::default()
        };
        let times = flow.sampling_times(steps);
        for (i, pair) in times.windows(2).enumerate() {
            let v = self.velocity(&x, pair[0], text, guidance);
            x = gpu.axpby(1.0, &x, pair[1] - pair[0], &v);
            on_step(i + 1, steps);
        }
        Ok(x)
    }

    /// The (guided) velocity for `b` clips `x`.
    fn velocity(&self, x: &Buf, t: f32, text: &Text, guidance: f32) -> Buf {
        let gpu = &*self.gpu;
        if guidance == 1.0 {
            return self.model.velocity(gpu, x, t, text);
        }
        let per = x.len;
        let xx = gpu.alloc(2 * per);
        gpu.copy(x, &xx, 2, per, (0, 0), (per, 0));
        let v = self.model.velocity(gpu, &xx, t, text);
        // guide: v_u + w·(v_c − v_u)
        gpu.axpby_into(
            None,
            per,
            guidance,
            (&v, 0),
            1.0 - guidance,
            (&v, per),
            per,
            0,
        )
    }

    async fn videos(&self, x: &Buf, b: usize) -> Result<Vec<Video>, String> {
        let dims = self.shape(b);
        let frames = self.gpu.clip_rgba(x, dims).await?;
        Ok(to_videos(dims, frames))
    }
}
