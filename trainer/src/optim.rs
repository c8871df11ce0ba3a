//! Optimizers written on named parameters, so their state is saved by path in the same
//! safetensors files as the weights and a resumed run continues bit-for-bit where it stopped.
//! (burn's own optimizers key their state by parameter id, which a checkpoint file does not
//! keep.) Gradient clipping is by the global norm over all parameters, as in PyTorch's
//! `clip_grad_norm_`.

use std::collections::HashMap;

use burn::prelude::*;
use flick_core::checkpoint::NamedTensors;
use flick_core::params::{grads_by_path, map_params};

/// Global gradient norm and the factor that clips it to `clip` (if > 0); `None` if there are no
/// gradients or the norm is not finite (the update is skipped).
fn clipped_norm(grads: &HashMap<String, Tensor<1>>, clip: f32) -> Option<(f32, f32)> {
    let sq: Vec<Tensor<1>> = grads
        .values()
        .map(|g| g.clone().powi_scalar(2).sum())
        .collect();
    if sq.is_empty() {
        return None;
    }
    let norm = Tensor::cat(sq, 0).sum().into_scalar::<f32>().sqrt();
    norm.is_finite().then(|| {
        (
            norm,
            if clip > 0.0 && norm > clip {
                clip / norm
            } else {
                1.0
            },
        )
    })
}

/// AdamW (decoupled weight decay, Loshchilov & Hutter) with bias correction.
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Number of updates taken (for bias correction).
    pub t: u64,
    m: HashMap<String, Tensor<1>>,
    v: HashMap<String, Tensor<1>>,
}

/// What one update saw.
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

impl AdamW {
    pub fn new(beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            weight_decay,
            t: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// Apply one update from `grads` (of `loss.backward()`), clipping the global gradient norm
    /// to `clip` (if > 0). Returns `None` (no update) if the gradient norm is not finite.
    pub fn step<M: Module>(
        &mut self,
        model: M,
        grads: &burn::tensor::Gradients,
        lr: f32,
        clip: f32,
    ) -> (M, Option<StepStats>) {
        let grads = grads_by_path(&model, grads);
        self.step_with(model, &grads, lr, clip)
    }

    /// [`Self::step`] from gradients already gathered by parameter path (e.g. summed over
    /// data-parallel workers).
    pub fn step_with<M: Module>(
        &mut self,
        model: M,
        grads: &HashMap<String, Tensor<1>>,
        lr: f32,
        clip: f32,
    ) -> (M, Option<StepStats>) {
        let Some((norm, scale)) = clipped_norm(grads, clip) else {
            return (model, None);
        };
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let model = map_params(model, |path, _, p, _| {
            let g = grads.get(path)?.clone() * scale;
            let m = match self.m.remove(path) {
                Some(m) => m * b1 + g.clone() * (1.0 - b1),
                None => g.clone() * (1.0 - b1),
            };
            let v = match self.v.remove(path) {
                Some(v) => v * b2 + g.clone().powi_scalar(2) * (1.0 - b2),
                None => g.powi_scalar(2) * (1.0 - b2),
            };
            let update = (m.clone() / c1) / ((v.clone() / c2).sqrt() + self.eps);
            let p = p.clone() - (update + p * self.weight_decay) * lr;
            self.m.insert(path.to_string(), m);
            self.v.insert(path.to_string(), v);
            Some(p)
        });
        (model, Some(StepStats { grad_norm: norm }))
    }

    /// Moments as named tensors (`adam_m.<path>`, `adam_v.<path>`), for the training state.
    pub fn state_tensors(&self, out: &mut NamedTensors) {
        for (prefix, map) in [("adam_m.", &self.m), ("adam_v.", &self.v)] {
            for (path, t) in map {
                let data: Vec<f32> = t.to_data().try_to_vec::<f32>().expect("f32");
                out.insert(format!("{prefix}{path}"), (vec![data.len()], data));
            }
        }
    }

    /// Drop the moments of these parameters (re-initialised ones start afresh).
    pub fn forget(&mut self, paths: &[String]) {
        for p in paths {
            self.m.remove(p);
            self.v.remove(p);
        }
    }

    /// Restore moments saved by [`Self::state_tensors`].
    pub fn load_state(&mut self, tensors: &NamedTensors, t: u64, device: &Device) {
        self.t = t;
        for (name, (_, data)) in tensors {
            let (map, path) = if let Some(p) = name.strip_prefix("adam_m.") {
                (&mut self.m, p)
            } else if let Some(p) = name.strip_prefix("adam_v.") {
                (&mut self.v, p)
            } else {
                continue;
            };
            map.insert(
                path.to_string(),
                Tensor::<1>::from_data(TensorData::new(data.clone(), [data.len()]), device),
            );
        }
    }
}

/// RMSProp (`v ← α·v + (1 − α)·g²`, `p ← p − lr·g / (√v + ε)`), APT's optimiser for both
/// networks (α = 0.9, no weight decay; ≈ Adam with β1 = 0, β2 = 0.9 without bias correction).
/// State saved by path under a prefix, so a generator's and a discriminator's live in one file.
pub struct RmsProp {
    pub alpha: f32,
    pub eps: f32,
    v: HashMap<String, Tensor<1>>,
}

impl RmsProp {
    pub fn new(alpha: f32, eps: f32) -> Self {
        Self {
            alpha,
            eps,
            v: HashMap::new(),
        }
    }

    /// One update from gradients by parameter path, the global norm clipped to `clip` if > 0.
    /// `None` (no update) if the gradient norm is not finite.
    pub fn step_with<M: Module>(
        &mut self,
        model: M,
        grads: &HashMap<String, Tensor<1>>,
        lr: f32,
        clip: f32,
    ) -> (M, Option<StepStats>) {
        let Some((norm, scale)) = clipped_norm(grads, clip) else {
            return (model, None);
        };
        let a = self.alpha;
        let model = map_params(model, |path, _, p, _| {
            let g = grads.get(path)?.clone() * scale;
            let v = match self.v.remove(path) {
                Some(v) => v * a + g.clone().powi_scalar(2) * (1.0 - a),
                None => g.clone().powi_scalar(2) * (1.0 - a),
            };
            let p = p - g / (v.clone().sqrt() + self.eps) * lr;
            self.v.insert(path.to_string(), v);
            Some(p)
        });
        (model, Some(StepStats { grad_norm: norm }))
    }

    /// Second moments as named tensors `<prefix>rms_v.<path>`.
    pub fn state_tensors(&self, prefix: &str, out: &mut NamedTensors) {
        for (path, t) in &self.v {
            let data: Vec<f32> = t.to_data().try_to_vec::<f32>().expect("f32");
            out.insert(format!("{prefix}rms_v.{path}"), (vec![data.len()], data));
        }
    }

    /// Restore what [`Self::state_tensors`] saved under `prefix`.
    pub fn load_state(&mut self, prefix: &str, tensors: &NamedTensors, device: &Device) {
        let key = format!("{prefix}rms_v.");
        for (name, (_, data)) in tensors {
            if let Some(path) = name.strip_prefix(&key) {
                self.v.insert(
                    path.to_string(),
                    Tensor::<1>::from_data(TensorData::new(data.clone(), [data.len()]), device),
                );
            }
        }
    }
}

/// Loss and gradients (by parameter path) of one batch of `batch` items split over `workers`
/// threads. `loss_of(local, lo, hi)` returns the mean loss of items `lo..hi` computed with
/// `local`, a copy of `model` whose parameters are fresh autodiff leaves (no data is copied);
/// each share is weighted by its size, so the summed gradients are those of the whole batch's
/// mean loss. burn's CPU backend keeps about one core busy per op sequence; this is how a
/// training step uses them all. With one worker it runs on the calling thread.
/// Time from the start of the last [`data_parallel_grads`] call until its (last) worker's loss
/// value was read, i.e. the forward pass including the device's work; for step profiles.
pub static FORWARD_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn data_parallel_grads<M: Module + Sync>(
    model: &M,
    batch: usize,
    workers: usize,
    loss_of: impl Fn(&M, usize, usize) -> Tensor<1> + Sync,
) -> (f32, HashMap<String, Tensor<1>>) {
    let workers = workers.clamp(1, batch.max(1));
    let bounds: Vec<(usize, usize)> = (0..workers)
        .map(|w| (w * batch / workers, (w + 1) * batch / workers))
        .filter(|(a, z)| z > a)
        .collect();
    let started = std::time::Instant::now();
    let one = |(lo, hi): (usize, usize)| {
        let local = flick_core::params::map_params(model.clone(), |_, _, p, _| Some(p));
        let loss = loss_of(&local, lo, hi) * ((hi - lo) as f32 / batch as f32);
        let value: f32 = loss.clone().into_scalar();
        FORWARD_NANOS.store(
            started.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let grads = loss.backward();
        (value, grads_by_path(&local, &grads))
    };
    let parts: Vec<(f32, HashMap<String, Tensor<1>>)> = if bounds.len() == 1 {
        vec![one(bounds[0])]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .iter()
                .map(|&r| scope.spawn(move || one(r)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("training worker panicked"))
                .collect()
        })
    };
    let mut loss = 0.0;
    let mut total: HashMap<String, Tensor<1>> = HashMap::new();
    for (value, grads) in parts {
        loss += value;
        for (path, g) in grads {
            let g = match total.remove(&path) {
                Some(acc) => acc + g,
                None => g,
            };
            total.insert(path, g);
        }
    }
    (loss, total)
}
