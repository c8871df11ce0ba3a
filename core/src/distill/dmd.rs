//! Distribution matching distillation (DMD, Yin et al., CVPR 2024, arXiv 2311.18828; DMD2,
//! NeurIPS 2024, arXiv 2405.14867) in Flick's flow-matching form.
//!
//! # The gradient, derived for rectified flow
//!
//! DMD minimises `KL(p_fake ‖ p_real)` between the generator's distribution and the data's,
//! diffused to every noise level. Its gradient with respect to a generated sample `x = G(z, c)`
//! is `E_t [ w_t · (s_fake(x_t, t) − s_real(x_t, t)) · ∂x_t/∂x ]`, with `s` the score of the
//! diffused distribution at the same noisy `x_t` for both.
//!
//! On Flick's path `x_t = (1 − t)·x + t·ε` a velocity prediction `v̂ ≈ ε − x` gives the clean-clip
//! prediction `x̂0 = x_t − t·v̂` (from `x_t = x̂0 + t·(ε̂ − x̂0)`), and Tweedie's formula gives the
//! score `s(x_t) = −(x_t − (1 − t)·x̂0) / t²`. The difference of two scores at the same `x_t`
//! therefore only involves their clean predictions:
//!
//! ```text
//! s_fake − s_real = (1 − t)/t² · (x̂0_fake − x̂0_real)
//! ```
//!
//! and with `∂x_t/∂x = 1 − t` the gradient is `(1 − t)²/t² · (x̂0_fake − x̂0_real)`, averaged over
//! t. DMD replaces the t-dependent factor by the normalisation `w_t = 1 / mean|x − x̂0_real|`
//! (per sample, over all its elements), which keeps the gradient's scale even across noise
//! levels. With `p_real = x − x̂0_real` and `p_fake = x − x̂0_fake`:
//!
//! ```text
//! grad = (p_real − p_fake) / mean|p_real| = w_t · (x̂0_fake − x̂0_real)
//! ```
//!
//! Descending along `grad` moves `x` towards what the real score denoises it to and away from
//! what the fake score does. The generator loss `0.5·‖x − stopgrad(x − grad)‖²` (mean over
//! elements) has exactly `grad` (scaled by 1/N) as its gradient at `x`, so the update flows back
//! through `G` with ordinary autodiff. Non-finite entries of `grad` are zeroed (as in the
//! reference code's `torch.nan_to_num`).
//!
//! The real score is the frozen teacher with classifier-free guidance; the fake score is a copy
//! of the teacher trained online on the generator's (detached) samples with the flow-matching
//! loss, unguided. The trainer's loop (`flick distill dmd`) alternates the two updates.

use burn::prelude::*;

/// The clean-clip prediction `x̂0 = x_t − t·v̂` of a velocity `v̂` at noisy input `x_t`, times
/// `t: [B]`. `[B, C, T, H, W]`.
pub fn clean_prediction(x_t: Tensor<5>, v: Tensor<5>, t: Tensor<1>) -> Tensor<5> {
    let b = t.dims()[0];
    x_t - v * t.reshape([b, 1, 1, 1, 1])
}

/// The distribution-matching gradient `(p_real − p_fake) / mean|p_real|` per sample, with
/// `p = x − x̂0` (see the module docs), non-finite entries zeroed. No gradient flows through it.
///
/// # Shapes
/// `x`, `x0_real`, `x0_fake`: `[B, C, T, H, W]` → `[B, C, T, H, W]`
pub fn dm_gradient(x: Tensor<5>, x0_real: Tensor<5>, x0_fake: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    let x = x.detach();
    let p_real = x.clone() - x0_real.detach();
    let p_fake = x - x0_fake.detach();
    let norm = p_real
        .clone()
        .abs()
        .reshape([b, c * t * h * w])
        .mean_dim(1)
        .reshape([b, 1, 1, 1, 1]);
    let grad = (p_real - p_fake) / norm;
    let bad = grad.clone().is_finite().bool_not();
    grad.mask_fill(bad, 0.0)
}

/// The generator's DMD loss `0.5·mean((x − stopgrad(x − grad))²)`, whose gradient at `x` is
/// `grad / N`. `x` carries the generator's graph; returns `[1]`.
pub fn dm_loss(x: Tensor<5>, grad: Tensor<5>) -> Tensor<1> {
    let target = (x.clone() - grad).detach();
    (x - target).powi_scalar(2).mean() * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn tensor(values: Vec<f32>, shape: [usize; 5], device: &Device) -> Tensor<5> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn equal_scores_give_no_gradient_and_nans_are_zeroed() {
        let device = Device::flex();
        let shape = [2, 3, 2, 4, 4];
        let x = Tensor::<5>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let x0 = Tensor::<5>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let g = dm_gradient(x.clone(), x0.clone(), x0.clone());
        let max: f32 = g.abs().max().into_scalar();
        assert_eq!(max, 0.0, "real = fake must give a zero gradient");
        // A sample whose real prediction equals it exactly (mean|p_real| = 0): 0/0 → 0.
        let g = dm_gradient(x.clone(), x.clone(), x0);
        let v: Vec<f32> = g.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            v.iter().all(|v| v.is_finite()),
            "non-finite gradient entries"
        );
        assert!(v.iter().all(|&v| v == 0.0));
    }

    /// The exact clean prediction `E[x0 | x_t]` for Gaussian data `N(μ, σ²)` on the path
    /// `x_t = (1 − t)·x0 + t·ε`.
    fn gaussian_x0(x_t: f32, t: f32, mu: f32, sigma: f32) -> f32 {
        let a = 1.0 - t;
        let var = a * a * sigma * sigma + t * t;
        mu + a * sigma * sigma / var * (x_t - a * mu)
    }

    #[test]
    fn a_generator_is_pulled_to_the_real_mean() {
        // Real data N(μ_r, σ²) per element; the "generator" is z·σ + b (a learnable shift b), so
        // the fake distribution is N(b, σ²), whose exact score the fake prediction uses. DMD's
        // gradient must point from b to μ_r, and descending it must bring b to μ_r.
        let device = Device::flex().autodiff();
        let (mu_r, sigma) = ([1.5f32, -0.7, 0.3], 0.5f32);
        let shape = [8, 3, 1, 4, 4];
        let per = 16;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = [0.0f32, 0.0, 0.0];
        for step in 0..300 {
            let bias =
                Tensor::<1>::from_data(TensorData::new(b.to_vec(), [3]), &device).require_grad();
            let z: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| crate::flow::standard_normal(&mut rng) * sigma)
                .collect();
            let x = tensor(z, shape, &device) + bias.clone().reshape([1, 3, 1, 1, 1]);
            let xv: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().unwrap();
            let t = 0.02 + 0.96 * (step % 10) as f32 / 9.0;
            let (mut real, mut fake) = (Vec::new(), Vec::new());
            for (i, &xi) in xv.iter().enumerate() {
                let ch = (i / per) % 3;
                let x_t = (1.0 - t) * xi + t * crate::flow::standard_normal(&mut rng);
                real.push(gaussian_x0(x_t, t, mu_r[ch], sigma));
                fake.push(gaussian_x0(x_t, t, b[ch], sigma));
            }
            let grad = dm_gradient(
                x.clone(),
                tensor(real, shape, &device),
                tensor(fake, shape, &device),
            );
            if step == 0 {
                // Mean gradient per channel has the sign of b − μ_r (descent moves towards μ_r).
                let g: Vec<f32> = grad
                    .clone()
                    .inner()
                    .swap_dims(0, 1)
                    .reshape([3, 8 * per])
                    .mean_dim(1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                for ch in 0..3 {
                    assert!(
                        g[ch] * (b[ch] - mu_r[ch]) > 0.0,
                        "channel {ch}: gradient {} does not point from μ_r {} to b {}",
                        g[ch],
                        mu_r[ch],
                        b[ch]
                    );
                }
            }
            let loss = dm_loss(x, grad);
            let grads = loss.backward();
            let gb: Vec<f32> = bias
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for ch in 0..3 {
                b[ch] -= 1.0 * gb[ch];
            }
        }
        for ch in 0..3 {
            assert!(
                (b[ch] - mu_r[ch]).abs() < 0.1,
                "channel {ch}: the generator's mean {} did not reach μ_r {}",
                b[ch],
                mu_r[ch]
            );
        }
    }

    #[test]
    fn the_clean_prediction_inverts_the_path() {
        let device = Device::flex();
        let shape = [2, 3, 1, 2, 2];
        let x0 = Tensor::<5>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let eps = Tensor::<5>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.9], [2]), &device);
        let (x_t, v) = crate::flow::noise(x0.clone(), eps, t.clone());
        let back = clean_prediction(x_t, v, t);
        let diff: f32 = (back - x0).abs().max().into_scalar();
        assert!(diff < 1e-5, "x̂0 = x_t − t·v misses x0 by {diff}");
    }
}
