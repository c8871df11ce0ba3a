//! Adversarial objectives on discriminator logits `[B]`, each returning a scalar `[1]` (the
//! batch mean).
//!
//! - Non-saturating GAN (APT): `L_D = −log σ(D(x)) − log(1 − σ(D(G)))`, `L_G = −log σ(D(G))`.
//! - Relativistic pairing (APT2 / AAPT): `L_D = f(D(G) − D(x))`, `L_G = f(D(x) − D(G))`,
//!   `f(u) = −log σ(−u) = softplus(u)`.
//! - WGAN critic (the GAN review's baseline): `L_D = D(G) − D(x)`, `L_G = −D(G)`.
//!
//! Penalties:
//! - approximate R1 / R2 (APT): `λ·(D(x) − D(x + σ·n))²` on real (R1) or generated (R2) inputs,
//!   the two logits computed with the same noise level and noise draw;
//! - exact R1 and the WGAN gradient penalty need `‖∇ₓD‖`, i.e. a double backward, which burn's
//!   autodiff does not take. Flick estimates the gradient by a finite-difference directional
//!   derivative instead: with `u ∼ N(0, I)`, `E[(∇D·u)²] = ‖∇D‖²` and
//!   `∇D·u ≈ (D(x + h·u) − D(x)) / h`. One direction per sample: an unbiased estimate of
//!   `‖∇D‖²` (R1), and for the gradient penalty `(|∇D·u| − 1)²`, which pulls the directional
//!   slope's magnitude to 1 (the same fixed point as `(‖∇D‖ − 1)²` for `E|∇D·u|`, scaled by
//!   `√(2/π)`; documented, not hidden).

use burn::prelude::*;

/// `log(1 + eˣ)`, stable for large |x|.
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

/// Which adversarial objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GanLoss {
    NonSaturating,
    Relativistic,
    Wgan,
}

impl GanLoss {
    /// Discriminator loss from logits on real and generated samples (paired by index for the
    /// relativistic loss).
    pub fn d_loss(self, real: Tensor<1>, fake: Tensor<1>) -> Tensor<1> {
        match self {
            GanLoss::NonSaturating => (softplus(real.neg()) + softplus(fake)).mean(),
            GanLoss::Relativistic => softplus(fake - real).mean(),
            GanLoss::Wgan => (fake - real).mean(),
        }
    }

    /// Generator loss from logits on generated samples (and, for the relativistic loss, the
    /// real samples they are paired with; ignored otherwise).
    pub fn g_loss(self, fake: Tensor<1>, real: Option<Tensor<1>>) -> Tensor<1> {
        match (self, real) {
            (GanLoss::NonSaturating, _) => softplus(fake.neg()).mean(),
            (GanLoss::Relativistic, Some(real)) => softplus(real - fake).mean(),
            (GanLoss::Relativistic, None) => {
                panic!("the relativistic generator loss needs the paired real logits")
            }
            (GanLoss::Wgan, _) => fake.neg().mean(),
        }
    }
}

/// Approximate R1/R2 (APT): `λ · mean((D(x) − D(x̃))²)` for logits of clean and perturbed inputs.
pub fn approx_penalty(clean: Tensor<1>, perturbed: Tensor<1>, lambda: f32) -> Tensor<1> {
    (clean - perturbed).powi_scalar(2).mean() * lambda
}

/// R1 `γ/2 · ‖∇ₓD‖²` estimated from logits at `x` and `x + h·u`, `u ∼ N(0, I)`.
pub fn fd_r1(at_x: Tensor<1>, at_x_plus_hu: Tensor<1>, h: f32, gamma: f32) -> Tensor<1> {
    ((at_x_plus_hu - at_x) / h).powi_scalar(2).mean() * (gamma / 2.0)
}

/// WGAN gradient penalty `λ · (|∇D·u| − 1)²` at interpolates, from logits at `x̂` and `x̂ + h·u`.
pub fn fd_gradient_penalty(
    at_x: Tensor<1>,
    at_x_plus_hu: Tensor<1>,
    h: f32,
    lambda: f32,
) -> Tensor<1> {
    (((at_x_plus_hu - at_x) / h).abs() - 1.0)
        .powi_scalar(2)
        .mean()
        * lambda
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::<1>::from_floats(v, &Device::default())
    }
    fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar()
    }

    #[test]
    fn losses_have_their_textbook_values() {
        let ln2 = std::f32::consts::LN_2;
        // At logits 0 both terms of the non-saturating loss are ln 2.
        assert!(
            (scalar(GanLoss::NonSaturating.d_loss(t(&[0.0]), t(&[0.0]))) - 2.0 * ln2).abs() < 1e-6
        );
        assert!((scalar(GanLoss::NonSaturating.g_loss(t(&[0.0]), None)) - ln2).abs() < 1e-6);
        // A confident, right discriminator has a small loss; a fooled one a large loss.
        assert!(scalar(GanLoss::NonSaturating.d_loss(t(&[20.0]), t(&[-20.0]))) < 1e-6);
        assert!(
            (scalar(GanLoss::NonSaturating.d_loss(t(&[-20.0]), t(&[20.0]))) - 40.0).abs() < 1e-3
        );
        // softplus is stable far out.
        assert!((scalar(softplus(t(&[100.0]))) - 100.0).abs() < 1e-4);
        assert!(scalar(softplus(t(&[-100.0]))).abs() < 1e-6);
        // Relativistic: only the difference matters.
        let a = scalar(GanLoss::Relativistic.d_loss(t(&[3.0, 1.0]), t(&[1.0, 0.0])));
        let b = scalar(GanLoss::Relativistic.d_loss(t(&[13.0, 11.0]), t(&[11.0, 10.0])));
        assert!((a - b).abs() < 1e-5);
        assert!(
            (scalar(GanLoss::Relativistic.g_loss(t(&[0.5]), Some(t(&[0.5])))) - ln2).abs() < 1e-6
        );
        // WGAN: the mean difference.
        assert!((scalar(GanLoss::Wgan.d_loss(t(&[2.0, 4.0]), t(&[1.0, 1.0]))) + 2.0).abs() < 1e-6);
    }

    #[test]
    fn penalties_measure_the_slope() {
        // D(x) = 3·(x·u) along the probe direction: the directional derivative is 3.
        let h = 1e-2;
        let at = t(&[0.5, -1.0]);
        let moved = t(&[0.5 + 3.0 * h, -1.0 + 3.0 * h]);
        assert!((scalar(fd_r1(at.clone(), moved.clone(), h, 2.0)) - 9.0).abs() < 1e-2);
        assert!((scalar(fd_gradient_penalty(at.clone(), moved, h, 10.0)) - 40.0).abs() < 0.1);
        // Slope 1: no gradient penalty.
        let unit = t(&[0.5 + h, -1.0 - h]);
        assert!(scalar(fd_gradient_penalty(at.clone(), unit, h, 10.0)) < 1e-2);
        assert!(
            (scalar(approx_penalty(t(&[1.0, 2.0]), t(&[1.5, 2.0]), 100.0)) - 12.5).abs() < 1e-4
        );
    }
}
