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
/// gradients or the norm is not finite (the update is skipped). Read back to the host (RMSprop's
/// update, which decides on the host).
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

/// A moment buffer: a device tensor (GPU) or plain host memory (the CPU's fused update).
// One buffer per parameter, a few hundred in all: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Buf {
    Device(Tensor<1>),
    Host(Vec<f32>),
}

impl Buf {
    fn to_vec(&self) -> Vec<f32> {
        match self {
            Buf::Device(t) => t.to_data().try_to_vec::<f32>().expect("f32"),
            Buf::Host(v) => v.clone(),
        }
    }
    fn into_host(self) -> Vec<f32> {
        match self {
            Buf::Device(t) => t.into_data().try_to_vec::<f32>().expect("f32"),
            Buf::Host(v) => v,
        }
    }
    fn into_tensor(self, device: &Device) -> Tensor<1> {
        match self {
            Buf::Device(t) => t,
            Buf::Host(v) => {
                let n = v.len();
                Tensor::from_data(TensorData::new(v, [n]), device)
            }
        }
    }
}

fn host_vec(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 parameters")
}

/// An optional EMA model and its decay → the model, the decay (0 without one) and its
/// parameters by path.
fn split_ema<M: Module>(ema: Option<(M, f32)>) -> (Option<M>, f32, HashMap<String, Tensor<1>>) {
    let mut values = HashMap::new();
    let (ema, decay) = match ema {
        Some((e, d)) => (Some(e), d),
        None => (None, 0.0),
    };
    if let Some(e) = &ema {
        flick_core::params::visit_params(e, |path, _, v, _| {
            values.insert(path.to_string(), v);
        });
    }
    (ema, decay, values)
}

/// AdamW (decoupled weight decay, Loshchilov & Hutter) with bias correction.
///
/// The update is fused with the EMA. On a GPU each parameter's update is one kernel launch
/// (`flick_shaders::adamw`: clip factor, both moments, the step, weight decay and the EMA in one
/// pass), and nothing is read back: the gradient norm, the clip factor, whether the update is
/// taken and the step count stay on the device ([`AdamW::update`]), so the host issues the next
/// step's work while the device is still on this one. On the CPU gradients, weights, moments and
/// the EMA's copy are read into host memory and updated in one vectorised loop per parameter,
/// parameters in parallel. With `unfused` (or `--no-fused`) the same formulas run as a dozen
/// tensor operations per parameter — the reference the fused paths are tested against.
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Number of updates taken (for bias correction), as of the last host update or load; see
    /// [`Self::t`].
    t: u64,
    /// The count on the device, once a device update has run (incremented there by each update
    /// taken, so that a skipped one is not counted without the host reading anything).
    t_device: Option<Tensor<1>>,
    m: HashMap<String, Buf>,
    v: HashMap<String, Buf>,
    /// Force the tensor path on the CPU too (for tests and benchmarks of the fused update).
    pub unfused: bool,
}

/// What one update saw.
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// What one update saw, still where it was computed: the global gradient norm before clipping
/// and whether the update was taken (1) or skipped (0), as `[1]` tensors on the gradients'
/// device. Reading them waits for the device; a training loop reads many steps' at once
/// ([`Unread`]).
pub struct Pending {
    pub grad_norm: Tensor<1>,
    pub taken: Tensor<1>,
}

impl Pending {
    fn known(grad_norm: f32, taken: bool, device: &Device) -> Self {
        let one = |x: f32| Tensor::from_data(TensorData::new(vec![x], [1]), device);
        Self {
            grad_norm: one(grad_norm),
            taken: one(if taken { 1.0 } else { 0.0 }),
        }
    }

    /// Wait for the update and read what it saw: `None` if it was skipped.
    pub fn read(self) -> Option<StepStats> {
        let v = read_floats(vec![self.grad_norm, self.taken]);
        (v[1] != 0.0).then_some(StepStats { grad_norm: v[0] })
    }
}

/// A loss already read, as the `gate` of [`AdamW::update`] on `device` (the training's): the
/// update is not taken unless it is finite.
pub fn gate_of(loss: f32, device: &Device) -> Option<Tensor<1>> {
    Some(Tensor::from_data(TensorData::new(vec![loss], [1]), device))
}

/// `[1]` tensors on one device, read with one read-back.
fn read_floats(values: Vec<Tensor<1>>) -> Vec<f32> {
    let values: Vec<Tensor<1>> = values.into_iter().map(Tensor::inner).collect();
    Tensor::cat(values, 0)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 values")
}

/// The steps of a training loop whose loss and update outcome have not been read yet: the host
/// queues steps without waiting for the device, and reads them all, in one read-back, when it
/// must (to log, to checkpoint, to time) — then replays them in order through the loop's
/// non-finite [`crate::run::Guard`].
pub struct Unread<T> {
    steps: Vec<(T, Tensor<1>, Pending)>,
}

impl<T> Default for Unread<T> {
    fn default() -> Self {
        Self { steps: Vec::new() }
    }
}

impl<T> Unread<T> {
    /// Queue a step: its tag (e.g. the step number), its loss (`[1]`) and its update.
    pub fn push(&mut self, tag: T, loss: Tensor<1>, update: Pending) {
        self.steps.push((tag, loss, update));
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Read every queued step (waiting for the device once): `(tag, loss, stats)` in order,
    /// `stats` `None` for a skipped update.
    pub fn read(&mut self) -> Vec<(T, f32, Option<StepStats>)> {
        if self.steps.is_empty() {
            return Vec::new();
        }
        let steps = std::mem::take(&mut self.steps);
        let mut values = Vec::with_capacity(3 * steps.len());
        let mut tags = Vec::with_capacity(steps.len());
        for (tag, loss, p) in steps {
            tags.push(tag);
            values.extend([loss, p.grad_norm, p.taken]);
        }
        let v = read_floats(values);
        tags.into_iter()
            .zip(v.chunks(3))
            .map(|(tag, x)| {
                (
                    tag,
                    x[0],
                    (x[2] != 0.0).then_some(StepStats { grad_norm: x[1] }),
                )
            })
            .collect()
    }
}

impl AdamW {
    pub fn new(beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            weight_decay,
            t: 0,
            t_device: None,
            m: HashMap::new(),
            v: HashMap::new(),
            unfused: false,
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
        let (model, _, update) = self.update(model, None, grads, lr, clip, None);
        (model, update.read())
    }

    /// Number of updates taken so far (read from the device after device updates).
    pub fn t(&self) -> u64 {
        match &self.t_device {
            Some(t) => t.clone().into_scalar::<f32>().round() as u64,
            None => self.t,
        }
    }

    /// One update and, if it was taken, the EMA `ema ← decay·ema + (1 − decay)·p` of the updated
    /// weights (`ema`: the average model and its decay), without waiting for the device: the
    /// update is skipped — weights, moments, EMA and step count left as they were — where the
    /// gradient norm, or `gate` (e.g. the loss) if given, is not finite, decided where the update
    /// runs. Returns what it saw, still unread ([`Pending::read`] waits for it; not taken without
    /// any gradient: nothing to update).
    pub fn update<M: Module>(
        &mut self,
        model: M,
        ema: Option<(M, f32)>,
        grads: &HashMap<String, Tensor<1>>,
        lr: f32,
        clip: f32,
        gate: Option<Tensor<1>>,
    ) -> (M, Option<M>, Pending) {
        let Some(device) = grads.values().next().map(|g| g.device()) else {
            // Nothing to update.
            let device = model
                .devices()
                .first()
                .cloned()
                .unwrap_or_else(Device::flex);
            return (
                model,
                ema.map(|(e, _)| e),
                Pending::known(f32::NAN, false, &device),
            );
        };
        if device.identity().is_none() && !self.unfused {
            let gate = gate.map(|g| g.inner().into_scalar::<f32>());
            let (model, ema, stats) = self.step_host(model, ema, grads, lr, clip, gate);
            let pending = match stats {
                Some(s) => Pending::known(s.grad_norm, true, &device),
                None => Pending::known(f32::NAN, false, &device),
            };
            return (model, ema, pending);
        }
        self.step_device(model, ema, grads, lr, clip, gate, &device)
    }

    /// The update on a device, nothing read back: the norm, the clip factor, whether the step is
    /// taken and the bias corrections computed there into `s = [scale, taken, c₁, c₂]`, then one
    /// `flick_shaders::adamw_any` per parameter. On a GPU that is two kernel launches per
    /// parameter (its row of the squared-norm table, its update) and a few for the step, with
    /// weights and averages updated in their own shapes (no reshapes queued); burn's operations
    /// with `unfused` or off a GPU.
    #[allow(clippy::too_many_arguments)]
    fn step_device<M: Module>(
        &mut self,
        model: M,
        ema: Option<(M, f32)>,
        grads: &HashMap<String, Tensor<1>>,
        lr: f32,
        clip: f32,
        gate: Option<Tensor<1>>,
        device: &Device,
    ) -> (M, Option<M>, Pending) {
        use flick_core::shaders::{
            DispatchTensor, SUMSQ_SLOTS, adamw_any, dims_any, fused_on, reshape_any, sumsq_into,
        };
        let (b1, b2) = (self.beta1, self.beta2);
        let kernel = !self.unfused && fused_on(device);
        let floats = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<1>::from_data(TensorData::new(v, [n]), device)
        };
        // Σg² per parameter into its row of one table, in a fixed order (the sum's rounding does
        // not depend on a hash map's).
        let mut paths: Vec<&String> = grads.keys().collect();
        paths.sort();
        let mut table = Tensor::<1>::zeros([paths.len() * SUMSQ_SLOTS], device);
        for (row, path) in paths.iter().enumerate() {
            table = sumsq_into(table, grads[*path].clone().into_dispatch(), row, !kernel);
        }
        let norm = table.sum().sqrt();
        // A non-finite gate makes the check non-finite too (x·0 is NaN for x = ±∞ or NaN).
        let check = match gate {
            Some(g) => norm.clone() + g.inner().to_device(device) * 0.0,
            None => norm.clone(),
        };
        let taken = check.is_finite().float();
        let scale = if clip > 0.0 {
            floats(vec![clip]) / norm.clone().clamp_min(clip)
        } else {
            floats(vec![1.0])
        };
        let t = self
            .t_device
            .take()
            .unwrap_or_else(|| floats(vec![self.t as f32]))
            + taken.clone();
        let c = floats(vec![b1, b2]).powf(t.clone().expand([2])).neg() + 1.0;
        self.t_device = Some(t);
        let s = Tensor::cat(vec![scale, taken.clone(), c], 0).into_dispatch();
        let (ema, decay) = match ema {
            Some((e, d)) => (Some(e), d),
            None => (None, 0.0),
        };
        let mut averages: HashMap<String, DispatchTensor> = HashMap::new();
        if let Some(e) = &ema {
            flick_core::params::visit_params_raw(e, |path, v| {
                averages.insert(path.to_string(), v);
            });
        }
        let mut new_avg: HashMap<String, DispatchTensor> = HashMap::new();
        let h = [b1, b2, self.eps, self.weight_decay, lr, decay];
        let model = flick_core::params::map_params_raw(model, |path, p| {
            let Some(g) = grads.get(path) else {
                // No gradient: the weights stay, the average still moves towards them (if the
                // step is taken).
                if let Some(a) = averages.remove(path) {
                    let dims = dims_any(&a);
                    let n = dims.iter().product::<usize>();
                    let flat = |x: DispatchTensor| Tensor::<1>::from_dispatch(x).reshape([n]);
                    let (a, p) = (flat(a), flat(p));
                    let moved = a.clone() * decay + p * (1.0 - decay);
                    let skip = taken.clone().equal_elem(0.0).expand([n]);
                    let kept = moved.mask_where(skip, a).into_dispatch();
                    new_avg.insert(path.to_string(), reshape_any(kept, &dims));
                }
                return None;
            };
            let n = g.dims()[0];
            let zeros = || Tensor::<1>::zeros([n], device);
            let m = self
                .m
                .remove(path)
                .map_or_else(zeros, |b| b.into_tensor(device));
            let v = self
                .v
                .remove(path)
                .map_or_else(zeros, |b| b.into_tensor(device));
            let a = averages.remove(path).unwrap_or_else(|| p.clone());
            let (w, m, v, a) = adamw_any(
                [
                    p,
                    g.clone().into_dispatch(),
                    m.into_dispatch(),
                    v.into_dispatch(),
                    a,
                    s.clone(),
                ],
                h,
                kernel,
            );
            self.m
                .insert(path.to_string(), Buf::Device(Tensor::from_dispatch(m)));
            self.v
                .insert(path.to_string(), Buf::Device(Tensor::from_dispatch(v)));
            new_avg.insert(path.to_string(), a);
            Some(w)
        });
        let ema =
            ema.map(|e| flick_core::params::map_params_raw(e, |path, _| new_avg.remove(path)));
        (
            model,
            ema,
            Pending {
                grad_norm: norm,
                taken,
            },
        )
    }

    /// The fused CPU update (see the type's docs): parameters in parallel over the cores, each
    /// in one pass over its elements.
    fn step_host<M: Module>(
        &mut self,
        model: M,
        ema: Option<(M, f32)>,
        grads: &HashMap<String, Tensor<1>>,
        lr: f32,
        clip: f32,
        gate: Option<f32>,
    ) -> (M, Option<M>, Option<StepStats>) {
        use rayon::prelude::*;
        if self.t_device.is_some() {
            self.t = self.t();
            self.t_device = None;
        }
        let host: HashMap<&str, Vec<f32>> = grads
            .par_iter()
            .map(|(k, g)| (k.as_str(), host_vec(g.clone())))
            .collect();
        let norm = host
            .par_iter()
            .map(|(_, g)| flick_core::shaders::update::sum_squares(g))
            .sum::<f64>()
            .sqrt() as f32;
        if host.is_empty() || !norm.is_finite() || gate.is_some_and(|g| !g.is_finite()) {
            return (model, ema.map(|(e, _)| e), None);
        }
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let (ema, decay, mut averages) = split_ema(ema);
        // Every parameter's weights (and the EMA's copy) in host memory, updated in parallel.
        struct Job<'a> {
            path: String,
            w: Vec<f32>,
            g: Option<&'a [f32]>,
            m: Vec<f32>,
            v: Vec<f32>,
            avg: Option<Vec<f32>>,
        }
        let mut weights: Vec<(String, Tensor<1>)> = Vec::new();
        flick_core::params::visit_params(&model, |path, _, v, _| {
            weights.push((path.to_string(), v))
        });
        let mut jobs: Vec<Job> = weights
            .into_iter()
            .map(|(path, w)| {
                let n = w.dims()[0];
                let g = host.get(path.as_str()).map(|g| g.as_slice());
                let (m, v) = if g.is_some() {
                    (
                        self.m
                            .remove(&path)
                            .map_or_else(|| vec![0.0; n], Buf::into_host),
                        self.v
                            .remove(&path)
                            .map_or_else(|| vec![0.0; n], Buf::into_host),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                let avg = averages.remove(&path);
                Job {
                    path,
                    w: host_vec(w),
                    g,
                    m,
                    v,
                    avg: avg.map(host_vec),
                }
            })
            .collect();
        let hp = flick_core::shaders::update::AdamWStep {
            scale,
            beta1: b1,
            beta2: b2,
            c1,
            c2,
            eps,
            weight_decay: wd,
            lr,
        };
        jobs.par_iter_mut().for_each(|job| match job.g {
            Some(g) => flick_core::shaders::update::adamw_ema(
                &mut job.w,
                g,
                &mut job.m,
                &mut job.v,
                job.avg.as_deref_mut().map(|a| (a, decay)),
                &hp,
            ),
            // No gradient: the weights stay, the average still moves towards them.
            None => {
                if let Some(a) = job.avg.as_mut() {
                    flick_core::shaders::update::ema(a, &job.w, decay);
                }
            }
        });
        let mut new_w: HashMap<String, Vec<f32>> = HashMap::new();
        let mut new_avg: HashMap<String, Vec<f32>> = HashMap::new();
        for job in jobs {
            if job.g.is_some() {
                self.m.insert(job.path.clone(), Buf::Host(job.m));
                self.v.insert(job.path.clone(), Buf::Host(job.v));
                if let Some(a) = job.avg {
                    new_avg.insert(job.path.clone(), a);
                }
                new_w.insert(job.path, job.w);
            } else if let Some(a) = job.avg {
                new_avg.insert(job.path, a);
            }
        }
        fn rebuild<M: Module>(module: M, mut values: HashMap<String, Vec<f32>>) -> M {
            map_params(module, |path, _, old, _| {
                let a = values.remove(path)?;
                let n = a.len();
                Some(Tensor::from_data(TensorData::new(a, [n]), &old.device()))
            })
        }
        let model = rebuild(model, new_w);
        let ema = ema.map(|e| rebuild(e, new_avg));
        (model, ema, Some(StepStats { grad_norm: norm }))
    }

    /// Moments as named tensors (`adam_m.<path>`, `adam_v.<path>`), for the training state.
    pub fn state_tensors(&self, out: &mut NamedTensors) {
        for (prefix, map) in [("adam_m.", &self.m), ("adam_v.", &self.v)] {
            for (path, t) in map {
                let data = t.to_vec();
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
        self.t_device = None;
        for (name, (_, data)) in tensors {
            let (map, path) = if let Some(p) = name.strip_prefix("adam_m.") {
                (&mut self.m, p)
            } else if let Some(p) = name.strip_prefix("adam_v.") {
                (&mut self.v, p)
            } else {
                continue;
            };
            let buf = if device.identity().is_none() {
                Buf::Host(data.clone())
            } else {
                Buf::Device(Tensor::<1>::from_data(
                    TensorData::new(data.clone(), [data.len()]),
                    device,
                ))
            };
            map.insert(path.to_string(), buf);
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

/// Where the shares of a training batch are computed.
///
/// `Threads(n)`: `n` threads on the run's one device (burn's CPU backend keeps about one core busy
/// per op sequence; this is how a CPU step uses them all). `Devices(list)`: one share per device,
/// the first being the main device that holds the model, the optimizer and the EMA — burn's
/// multi-device pattern (a replica forked to each device, its gradients moved to the main device
/// and summed there, one optimizer step, the new weights forked again at the next step). The
/// checkpoint does not depend on either: a run may resume on another device count.
#[derive(Clone, Debug)]
pub enum Replicas {
    Threads(usize),
    Devices(Vec<Device>),
}

impl Replicas {
    pub fn threads(n: usize) -> Self {
        Self::Threads(n.max(1))
    }

    /// The device of each share, as autodiff devices: `main` once per thread, or the listed
    /// devices (whose first must be `main`).
    pub fn shares(&self, main: &Device) -> Vec<Device> {
        match self {
            Self::Threads(n) => vec![main.clone(); (*n).max(1)],
            Self::Devices(list) => {
                assert!(
                    list.first() == Some(main),
                    "the first of the replica devices is the main device"
                );
                list.iter().map(|d| d.clone().autodiff()).collect()
            }
        }
    }

    /// The main device for `Devices`; `None` for threads (the caller's device).
    pub fn main(&self) -> Option<&Device> {
        match self {
            Self::Threads(_) => None,
            Self::Devices(list) => list.first(),
        }
    }
}

/// `model` on `device`: itself when it is already there (no copy), else a copy moved there
/// (burn's `to_device`, staged through the host between two wgpu devices).
pub fn place<M: Module>(model: &M, device: &Device) -> M {
    if on(model, device) {
        model.clone()
    } else {
        move_flat(model, device)
    }
}

/// A copy of `model` on `device` made with one transfer: its parameters concatenated in path
/// order, moved, and split there (each parameter keeps its autodiff and gradient settings).
/// (burn's `to_device` moves parameter by parameter: one host round trip each between two wgpu
/// devices.) On lavapipe the copy itself is ~10 ms for teacher-small's 12 MB; the ~200
/// parameters' concatenation and split cost more than that in host-side op overhead.
pub fn move_flat<M: Module>(model: &M, device: &Device) -> M {
    let mut parts = Vec::new();
    let mut at = HashMap::new();
    let mut offset = 0;
    flick_core::params::visit_params(model, |path, _, v, _| {
        let n = v.dims()[0];
        at.insert(path.to_string(), (offset, n));
        offset += n;
        parts.push(v);
    });
    if parts.is_empty() {
        return model.clone().to_device(device);
    }
    let flat = Tensor::cat(parts, 0).to_device(&device.clone().inner());
    flick_core::params::map_params(model.clone(), |path, _, _, _| {
        let (o, n) = at[path];
        Some(flat.clone().narrow(0, o, n))
    })
}

/// Whether all of `model`'s parameters are on `device`.
fn on<M: Module>(model: &M, device: &Device) -> bool {
    model.devices().iter().all(|d| d == device)
}

/// A model that does not change during a run (a frozen teacher, the probe), copied once to each
/// replica's device.
pub struct Placed<M> {
    copies: Vec<(Device, M)>,
}

impl<M: Module> Placed<M> {
    pub fn new(model: &M, shares: &[Device]) -> Self {
        let mut copies: Vec<(Device, M)> = Vec::new();
        for d in shares {
            if !copies.iter().any(|(c, _)| c == d) {
                copies.push((d.clone(), place(model, d)));
            }
        }
        Self { copies }
    }

    pub fn on(&self, device: &Device) -> &M {
        &self
            .copies
            .iter()
            .find(|(d, _)| d == device)
            .expect("a copy on every replica device")
            .1
    }
}

/// Time spent moving gradients to the main device in the last [`data_parallel_grads`] call
/// (host-staged copies between devices, waiting for the replica included); for step profiles and
/// the scaling benchmark.
pub static TRANSFER_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The sum of per-share gradients, on the device of the first share's. A share computed on
/// another device travels as one flat tensor (its gradients concatenated in path order: one
/// transfer per share and step rather than one per parameter) and is split back there. Summed in
/// share order, so the result does not depend on which device computed which share beyond the
/// floating-point order of one addition per share.
pub fn reduce_grads(parts: Vec<HashMap<String, Tensor<1>>>) -> HashMap<String, Tensor<1>> {
    let mut parts = parts.into_iter();
    let Some(mut total) = parts.next() else {
        return HashMap::new();
    };
    let Some(main) = total.values().next().map(|t| t.device()) else {
        return total;
    };
    for grads in parts {
        let remote = grads.values().next().is_some_and(|t| t.device() != main);
        let grads = if remote {
            let started = std::time::Instant::now();
            let mut paths: Vec<String> = grads.keys().cloned().collect();
            paths.sort();
            let sizes: Vec<usize> = paths.iter().map(|p| grads[p].dims()[0]).collect();
            let mut grads = grads;
            let flat = Tensor::cat(
                paths
                    .iter()
                    .map(|p| grads.remove(p).expect("listed"))
                    .collect(),
                0,
            )
            .to_device(&main);
            let mut at = 0;
            let out: HashMap<String, Tensor<1>> = paths
                .into_iter()
                .zip(sizes)
                .map(|(p, n)| {
                    let g = flat.clone().narrow(0, at, n);
                    at += n;
                    (p, g)
                })
                .collect();
            TRANSFER_NANOS.fetch_add(
                started.elapsed().as_nanos() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            out
        } else {
            grads
        };
        for (path, g) in grads {
            let g = match total.remove(&path) {
                Some(acc) => acc + g,
                None => g,
            };
            total.insert(path, g);
        }
    }
    total
}

/// Time from the start of the last [`data_parallel_grads`] call until its (last) worker's loss
/// value was read, i.e. the forward pass including the device's work; for step profiles.
pub static FORWARD_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Read the loss before the backward pass and record [`FORWARD_NANOS`] (profiled steps only: it
/// makes the host wait for the forward pass before issuing the backward).
pub static MEASURE_FORWARD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Loss and gradients (by parameter path) of one batch of `batch` items split over the replicas'
/// `shares` (see [`Replicas::shares`]), one thread each. `loss_of(local, lo, hi, device)` returns
/// the mean loss of items `lo..hi` computed with `local` on `device` (every input it makes goes
/// there; frozen models through [`Placed`] or [`place`]): on the model's own device `local` is a
/// copy whose parameters are fresh autodiff leaves (no data is copied), on another device a copy
/// forked there. Each share is weighted by its size, so the summed gradients are those of the
/// whole batch's mean loss; they come back on the model's device ([`reduce_grads`]). With one
/// share it runs on the calling thread.
///
/// The loss value is read back after the backward pass has been issued, so a GPU runs the forward
/// and backward passes without the host waiting in between ([`data_parallel_grads_unread`] does
/// not read it at all). While [`MEASURE_FORWARD`] is set (a profiled step) it is read before the
/// backward pass, to time the forward pass.
pub fn data_parallel_grads<M: Module + Sync>(
    model: &M,
    batch: usize,
    shares: &[Device],
    loss_of: impl Fn(&M, usize, usize, &Device) -> Tensor<1> + Sync,
) -> (f32, HashMap<String, Tensor<1>>) {
    let (loss, grads) = data_parallel_grads_unread(model, batch, shares, loss_of);
    (loss.into_scalar(), grads)
}

/// [`data_parallel_grads`] with the loss not read: a `[1]` tensor (without autodiff) on the
/// model's device, so that a GPU step need not wait for its device before its update is issued.
pub fn data_parallel_grads_unread<M: Module + Sync>(
    model: &M,
    batch: usize,
    shares: &[Device],
    loss_of: impl Fn(&M, usize, usize, &Device) -> Tensor<1> + Sync,
) -> (Tensor<1>, HashMap<String, Tensor<1>>) {
    let n = shares.len().clamp(1, batch.max(1));
    let bounds: Vec<(usize, usize, &Device)> = (0..n)
        .map(|w| (w * batch / n, (w + 1) * batch / n, &shares[w]))
        .filter(|(a, z, _)| z > a)
        .collect();
    let started = std::time::Instant::now();
    TRANSFER_NANOS.store(0, std::sync::atomic::Ordering::Relaxed);
    let one = |(lo, hi, device): (usize, usize, &Device)| {
        let here = if on(model, device) {
            model.clone()
        } else {
            move_flat(model, device)
        };
        let local = flick_core::params::map_params(here, |_, _, p, _| Some(p));
        let loss = loss_of(&local, lo, hi, device) * ((hi - lo) as f32 / batch as f32);
        if MEASURE_FORWARD.load(std::sync::atomic::Ordering::Relaxed) {
            let _: f32 = loss.clone().into_scalar();
            FORWARD_NANOS.store(
                started.elapsed().as_nanos() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let grads = loss.backward();
        let grads = grads_by_path(&local, &grads);
        (loss.inner(), grads)
    };
    let parts: Vec<(Tensor<1>, HashMap<String, Tensor<1>>)> = if bounds.len() == 1 {
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
    let (losses, grads): (Vec<Tensor<1>>, Vec<_>) = parts.into_iter().unzip();
    let grads = reduce_grads(grads);
    // The shares' losses summed in share order on the first share's device.
    let main = losses[0].device();
    let loss = losses
        .into_iter()
        .map(|l| {
            if l.device() == main {
                l
            } else {
                l.to_device(&main)
            }
        })
        .reduce(|a, b| a + b)
        .expect("at least one share");
    (loss, grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flick_core::params::visit_params;
    use rand::{Rng, SeedableRng};

    fn values<M: Module>(m: &M) -> HashMap<String, Vec<f32>> {
        let mut out = HashMap::new();
        visit_params(m, |path, _, v, _| {
            out.insert(path.to_string(), host_vec(v));
        });
        out
    }

    fn max_diff(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn fused_cpu_update_equals_the_tensor_update_after_ten_steps() {
        fused_update_equals_the_tensor_update(Device::flex());
    }

    #[test]
    fn gpu_kernel_update_equals_the_tensor_update_after_ten_steps() {
        match flick_core::device::open(flick_core::device::BackendKind::Wgpu) {
            Ok(gpu) => fused_update_equals_the_tensor_update(gpu),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("no wgpu adapter, and CI=true requires one: {e}")
            }
            Err(e) => eprintln!("NOT RUN: gpu_kernel_update_equals_the_tensor_update — {e}"),
        }
    }

    /// Ten AdamW + EMA steps on `plain` (and its autodiff twin) with the fused update and with
    /// tensor operations, two of them skipped (a NaN gradient, an infinite loss): weights, EMA
    /// and moments agree to 1e-6, and both counted eight updates.
    fn fused_update_equals_the_tensor_update(plain: Device) {
        let ad = plain.clone().autodiff();
        let cfg = flick_core::model::ModelConfig::from_value(serde_json::json!({
            "frames": 2, "height": 8, "width": 8, "dim": 32, "depth": 1, "heads": 2,
            "stem_channels": 4, "text": {"max_len": 8, "dim": 16, "depth": 1, "heads": 2},
        }))
        .unwrap();
        let model = cfg.init(&ad);
        let shapes: Vec<(String, usize)> = {
            let mut v = Vec::new();
            visit_params(&model, |p, _, _, s| {
                v.push((p.to_string(), s.iter().product()))
            });
            v
        };
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut runs = Vec::new();
        let mut launches = 0;
        for unfused in [false, true] {
            let before = flick_core::shaders::kernel_launches();
            let mut opt = AdamW::new(0.9, 0.99, 1e-8, 0.01);
            opt.unfused = unfused;
            let mut rng = rng.clone();
            let (mut m, mut e) = (model.clone(), model.valid());
            for step in 0..10 {
                // Gradients large enough to be clipped on even steps; one parameter gets none.
                let gain = if step % 2 == 0 { 5.0 } else { 0.01 };
                let grads: HashMap<String, Tensor<1>> = shapes
                    .iter()
                    .skip(1)
                    .map(|(p, n)| {
                        let g: Vec<f32> = (0..*n)
                            .map(|_| gain * (rng.random::<f32>() - 0.5))
                            .collect();
                        (
                            p.clone(),
                            Tensor::from_data(TensorData::new(g, [*n]), &plain),
                        )
                    })
                    .collect();
                let mut grads = grads;
                // Step 5's gradient is not finite, step 7's loss (the gate) is not: both are
                // skipped, decided where the update runs, nothing changed by them.
                if step == 5 {
                    let g = grads.values_mut().next().unwrap();
                    *g = g.clone() * f32::NAN;
                }
                let gate = |x: f32| Tensor::<1>::from_data(TensorData::new(vec![x], [1]), &plain);
                let gate = match step {
                    7 => Some(gate(f32::INFINITY)),
                    3 => Some(gate(0.5)),
                    _ => None,
                };
                let (m2, e2, update) = opt.update(m, Some((e, 0.9)), &grads, 1e-2, 1.0, gate);
                let stats = update.read();
                assert_eq!(stats.is_some(), step != 5 && step != 7, "step {step}");
                (m, e) = (m2, e2.unwrap());
            }
            if !unfused {
                launches = flick_core::shaders::kernel_launches() - before;
            }
            let mut state = NamedTensors::new();
            opt.state_tensors(&mut state);
            runs.push((values(&m), values(&e), state, opt.t()));
        }
        let (fused, reference) = (&runs[0], &runs[1]);
        if plain.identity().is_some() {
            assert!(launches > 0, "the AdamW kernel did not run");
        }
        assert_ne!(values(&model), fused.0, "the update did nothing");
        for run in [fused, reference] {
            assert!(
                run.0
                    .values()
                    .chain(run.1.values())
                    .flatten()
                    .all(|x| x.is_finite()),
                "a skipped update let a NaN through"
            );
        }
        let dw = max_diff(&fused.0, &reference.0);
        let de = max_diff(&fused.1, &reference.1);
        assert!(dw <= 1e-6, "weights differ by {dw}");
        assert!(de <= 1e-6, "EMA differs by {de}");
        assert_eq!(fused.3, reference.3);
        assert_eq!(fused.3, 8, "two of the ten updates were skipped");
        assert_eq!(fused.2.len(), reference.2.len());
        for (k, (_, a)) in &fused.2 {
            let b = &reference.2[k].1;
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            let scale = b.iter().map(|x| x.abs()).fold(1e-3, f32::max);
            assert!(d <= 1e-6 * scale.max(1.0), "{k} differs by {d}");
        }
    }

    #[test]
    fn a_non_finite_gradient_skips_the_fused_update() {
        let ad = Device::flex().autodiff();
        let lin = burn::nn::LinearConfig::new(3, 2).init(&ad);
        let before = values(&lin);
        let mut grads = HashMap::new();
        visit_params(&lin, |p, _, v, _| {
            let n = v.dims()[0];
            grads.insert(
                p.to_string(),
                Tensor::<1>::from_data(TensorData::new(vec![f32::NAN; n], [n]), &Device::flex()),
            );
        });
        let mut opt = AdamW::new(0.9, 0.99, 1e-8, 0.0);
        let copy = lin.clone();
        let (lin, ema, update) = opt.update(lin, Some((copy, 0.9)), &grads, 1e-2, 1.0, None);
        let stats = update.read();
        assert!(stats.is_none() && opt.t() == 0);
        assert_eq!(values(&lin), before);
        assert!(ema.is_some());
    }
}
