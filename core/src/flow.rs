//! Rectified flow (as in SD3 and APT's backbone): the noising path, the training-time law, the
//! timestep shift and the Euler sampler with classifier-free guidance.
//!
//! `x_t = (1 − t)·x0 + t·ε`, velocity target `v = ε − x0`, `t ∈ [0, 1]` with `t = 1` pure noise.

use burn::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The timestep shift `s·t / (1 + (s − 1)·t)`: `s > 1` spends more time near noise, which
/// larger clips need (more pixels carry more redundant signal at a given t).
pub fn shift(t: f32, s: f32) -> f32 {
    s * t / (1.0 + (s - 1.0) * t)
}

/// The law of training times, before the shift.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimeLaw {
    /// `t = σ(m + s·n)`, `n ~ N(0, 1)` (SD3's logit-normal; m = 0, s = 1 by default).
    LogitNormal { mean: f32, std: f32 },
    /// `t ~ U(0, 1)`.
    Uniform,
}

/// Flow-matching options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    pub time_law: TimeLaw,
    /// Shift applied to training and sampling times (1 = none).
    pub shift: f32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            time_law: TimeLaw::LogitNormal {
                mean: 0.0,
                std: 1.0,
            },
            shift: 1.0,
        }
    }
}

impl FlowConfig {
    /// Draw one (shifted) training time.
    pub fn sample_time<R: Rng>(&self, rng: &mut R) -> f32 {
        let t = match self.time_law {
            TimeLaw::LogitNormal { mean, std } => {
                let z = mean + std * standard_normal(rng);
                1.0 / (1.0 + (-z).exp())
            }
            TimeLaw::Uniform => rng.random::<f32>(),
        };
        shift(t, self.shift).clamp(1e-4, 1.0)
    }

    /// The `steps + 1` sampling times from 1 down to 0 (uniform grid, then shifted).
    pub fn sampling_times(&self, steps: usize) -> Vec<f32> {
        (0..=steps)
            .map(|i| shift(1.0 - i as f32 / steps as f32, self.shift))
            .collect()
    }
}

/// One standard normal draw (Box–Muller), so noise is a pure function of an rng stream and
/// identical on every backend.
pub fn standard_normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-12);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `n` standard normal values.
pub fn normal_vec<R: Rng>(rng: &mut R, n: usize) -> Vec<f32> {
    (0..n).map(|_| standard_normal(rng)).collect()
}

/// Noise `x0` to times `t`: returns `(x_t, v_target)`.
///
/// # Shapes
/// `x0`, `eps`: `[B, ...]`, `t`: `[B]`.
pub fn noise<const D: usize>(
    x0: Tensor<D>,
    eps: Tensor<D>,
    t: Tensor<1>,
) -> (Tensor<D>, Tensor<D>) {
    let b = t.dims()[0];
    let mut shape = [1usize; D];
    shape[0] = b;
    let t = t.reshape(shape); // [B, 1, ...]
    let xt = x0.clone() * (t.clone().neg() + 1.0) + eps.clone() * t;
    (xt, eps - x0)
}

/// Euler integration of `dx/dt = v(x, t)` over `times` (descending from 1 to 0).
/// `velocity(x, t, i)` gets the current sample, the scalar time and the step index.
pub fn euler<const D: usize>(
    mut x: Tensor<D>,
    times: &[f32],
    mut velocity: impl FnMut(Tensor<D>, f32, usize) -> Tensor<D>,
) -> Tensor<D> {
    for (i, pair) in times.windows(2).enumerate() {
        let (t, t_next) = (pair[0], pair[1]);
        let v = velocity(x.clone(), t, i);
        x = x + v * (t_next - t);
    }
    x
}

/// Classifier-free guidance: `v_u + w·(v_c − v_u)`.
pub fn guide<const D: usize>(v_cond: Tensor<D>, v_uncond: Tensor<D>, w: f32) -> Tensor<D> {
    v_uncond.clone() + (v_cond - v_uncond) * w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shift_fixes_ends_and_pushes_towards_noise() {
        for s in [1.0, 3.0, 12.0] {
            assert!((shift(0.0, s)).abs() < 1e-7);
            assert!((shift(1.0, s) - 1.0).abs() < 1e-6);
        }
        assert!((shift(0.5, 1.0) - 0.5).abs() < 1e-7);
        assert!((shift(0.5, 3.0) - 0.75).abs() < 1e-6); // 1.5 / 2
        assert!(shift(0.2, 12.0) > shift(0.2, 3.0));
        // monotone
        let ts: Vec<f32> = (0..=100).map(|i| shift(i as f32 / 100.0, 5.0)).collect();
        assert!(ts.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn euler_integrates_straight_paths_exactly() {
        // For the point mass at x0, the flow's velocity at (x, t) is (x − x0)/t: straight lines
        // from the noise to x0, which Euler integrates exactly with any step count and shift.
        let device = Device::flex();
        let x0 = vec![0.5f32, -1.0, 2.0, 0.0];
        let z = vec![1.0f32, 0.3, -0.7, 2.5];
        for (steps, s) in [(1, 1.0), (3, 1.0), (7, 3.0), (25, 12.0)] {
            let flow = FlowConfig {
                shift: s,
                ..FlowConfig::default()
            };
            let target = Tensor::<2>::from_data(TensorData::new(x0.clone(), [2, 2]), &device);
            let out = euler(
                Tensor::<2>::from_data(TensorData::new(z.clone(), [2, 2]), &device),
                &flow.sampling_times(steps),
                |x, t, _| (x - target.clone()) / t,
            );
            let got: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
            for (g, e) in got.iter().zip(&x0) {
                assert!((g - e).abs() < 1e-4, "steps {steps}: {got:?} vs {x0:?}");
            }
        }
    }

    #[test]
    fn noising_matches_the_formula() {
        let device = Device::flex();
        let x0 = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
            &device,
        );
        let eps = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 1.0, -1.0, 0.5], [2, 2]),
            &device,
        );
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.25f32, 1.0], [2]), &device);
        let (xt, v) = noise(x0, eps, t);
        let xt: Vec<f32> = xt.into_data().try_to_vec::<f32>().unwrap();
        let v: Vec<f32> = v.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(xt, vec![0.75, 1.75, -1.0, 0.5]);
        assert_eq!(v, vec![-1.0, -1.0, -4.0, -3.5]);
    }

    #[test]
    fn training_times_stay_in_range_and_follow_the_shift() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let plain = FlowConfig::default();
        let shifted = FlowConfig {
            shift: 4.0,
            ..plain
        };
        let mean = |f: &FlowConfig, rng: &mut rand_chacha::ChaCha8Rng| {
            (0..4000).map(|_| f.sample_time(rng)).sum::<f32>() / 4000.0
        };
        let (m1, m2) = (mean(&plain, &mut rng), mean(&shifted, &mut rng));
        assert!((m1 - 0.5).abs() < 0.03, "{m1}");
        assert!(m2 > 0.7, "{m2}");
        assert!((0..1000).all(|_| (0.0..=1.0).contains(&shifted.sample_time(&mut rng))));
    }
}
