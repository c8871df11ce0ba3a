//! The model's activations on the CPU, forward and gradient, over plain `f32` slices:
//!
//! - GELU, `x·Φ(x)` with `Φ` the standard normal CDF (the exact form, as burn's `gelu` and
//!   PyTorch's `nn.GELU()` compute it);
//! - SiLU, `x·σ(x)` with `σ` the logistic sigmoid.
//!
//! burn's CPU versions evaluate `erf` and `exp` one element at a time through scalar libm calls
//! (GELU's `erf` alone was about a tenth of a teacher-small training step on two cores, the
//! SiLUs of the pixel-resolution conv blocks another tenth), SiLU as separate sigmoid and
//! product passes, each into a fresh tensor. Here
//! `Φ` comes from a branch-free `erfc` that the compiler vectorises: Abramowitz & Stegun 7.1.26,
//! `erfc(z) = t·P(t)·e^(−z²)`, `t = 1/(1 + p·z)`, a degree-5 `P` (absolute error below 1.5·10⁻⁷,
//! as in PyTorch's vectorised CPU `erf`), with the softmax's vectorisable `exp`
//! ([`crate::attention_cpu`]); the gradient reuses the same `e^(−x²/2)` for the density.
//! Large arrays are split over threads on native targets (rayon); each element's value depends
//! only on itself, so results do not depend on the thread count.

use crate::attention_cpu::exp;
use crate::conv_cpu::per_clip;

/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `Φ(x)` and `e^(−x²/2)` (the normal density's unscaled factor, which `Φ` needs anyway and the
/// gradient reuses). `Φ(x) = 1 − erfc(x/√2)/2` for `x ≥ 0`, `erfc(−x/√2)/2` below, with
/// `erfc(z) = t·P(t)·e^(−z²)`, `t = 1/(1 + p·z)` (Abramowitz & Stegun 7.1.26, the form PyTorch's
/// vectorised CPU `erf` uses: absolute error below 1.5·10⁻⁷); 0 where `x²/2 > 80`.
#[inline(always)]
fn cdf_and_gauss(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let p = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let e = exp(-0.5 * x * x);
    let half = 0.5 * p * e;
    (if x >= 0.0 { 1.0 - half } else { half }, e)
}

/// `Φ(x)`, the standard normal CDF.
#[inline(always)]
pub fn cdf(x: f32) -> f32 {
    cdf_and_gauss(x).0
}

#[inline(always)]
fn forward_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * cdf(x);
    }
}

#[inline(always)]
fn backward_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π).
        let (c, e) = cdf_and_gauss(x);
        *dx = g * (c + x * FRAC_1_SQRT_2PI * e);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(x: &[f32], y: &mut [f32]) {
    forward_body(x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_avx2(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    backward_body(x, dy, dx);
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Which activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    Silu,
}

/// `σ(x) = 1/(1 + e^(−x))`; exactly 0 below −80 (no subnormal results).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-x));
    if x >= -80.0 { s } else { 0.0 }
}

#[inline(always)]
fn silu_forward_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * sigmoid(x);
    }
}

#[inline(always)]
fn silu_backward_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))).
        let s = sigmoid(x);
        *dx = g * s * (1.0 + x * (1.0 - s));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_forward_avx2(x: &[f32], y: &mut [f32]) {
    silu_forward_body(x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_backward_avx2(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    silu_backward_body(x, dy, dx);
}

/// `y = f(x)`, element by element: GELU `x·Φ(x)` or SiLU `x·σ(x)`.
pub fn forward(act: Activation, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let fast = avx2();
    per_clip(&mut y, CHUNK, |i, y| {
        let x = &x[i * CHUNK..i * CHUNK + y.len()];
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has the features the functions are compiled for (checked above).
            unsafe {
                match act {
                    Activation::Gelu => forward_avx2(x, y),
                    Activation::Silu => silu_forward_avx2(x, y),
                }
            };
            return;
        }
        let _ = fast;
        match act {
            Activation::Gelu => forward_body(x, y),
            Activation::Silu => silu_forward_body(x, y),
        }
    });
    y
}

/// The gradient at `x` given the output's `dy`: GELU `dy·(Φ(x) + x·φ(x))`, SiLU
/// `dy·σ(x)·(1 + x·(1 − σ(x)))`.
pub fn backward(act: Activation, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "x and dy have one shape");
    let mut dx = vec![0f32; x.len()];
    let fast = avx2();
    per_clip(&mut dx, CHUNK, |i, dx| {
        let range = i * CHUNK..i * CHUNK + dx.len();
        let (x, dy) = (&x[range.clone()], &dy[range]);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: as in `forward`.
            unsafe {
                match act {
                    Activation::Gelu => backward_avx2(x, dy, dx),
                    Activation::Silu => silu_backward_avx2(x, dy, dx),
                }
            };
            return;
        }
        let _ = fast;
        match act {
            Activation::Gelu => backward_body(x, dy, dx),
            Activation::Silu => silu_backward_body(x, dy, dx),
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `erf` in f64 from its Maclaurin series (|x| ≤ 3) or its asymptotic continued fraction.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a <= 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(a) = e^(−a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + …)))), backwards from depth 60.
            let mut frac = a;
            for k in (1..60).rev() {
                frac = a + (k as f64 / 2.0) / frac;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / frac
        };
        r.copysign(x)
    }

    fn cdf64(x: f64) -> f64 {
        0.5 * (1.0 + erf64(x / std::f64::consts::SQRT_2))
    }

    fn grid() -> impl Iterator<Item = f32> {
        (0..=40_000).map(|i| -12.0 + 24.0 * i as f32 / 40_000.0)
    }

    #[test]
    fn the_reference_erf_is_right() {
        // Tabulated values (Abramowitz & Stegun 7.1).
        for (x, e) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            assert!((erf64(x) - e).abs() < 1e-14, "erf({x})");
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        let x: Vec<f32> = grid().collect();
        let y = forward(Activation::Gelu, &x);
        for (&x, &y) in x.iter().zip(&y) {
            let e = x as f64 * cdf64(x as f64);
            let tol = 5e-7 * (1.0 + (x as f64).abs());
            assert!((y as f64 - e).abs() < tol, "gelu({x}) = {y}, expected {e}");
        }
    }

    #[test]
    fn gradient_matches_the_definition_and_the_forward() {
        let x: Vec<f32> = grid().collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let dx = backward(Activation::Gelu, &x, &dy);
        for ((&x, &g), &d) in x.iter().zip(&dy).zip(&dx) {
            let xf = x as f64;
            let phi = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let e = g as f64 * (cdf64(xf) + xf * phi);
            assert!(
                (d as f64 - e).abs() < 1e-6 * g as f64 * (1.0 + xf.abs()),
                "gelu'({x})·{g} = {d}, expected {e}"
            );
            // Central differences of the definition in f64: the formula is the forward's slope.
            let h = 1e-4;
            let fd = ((xf + h) * cdf64(xf + h) - (xf - h) * cdf64(xf - h)) / (2.0 * h);
            assert!((g as f64 * fd - e).abs() < 1e-6 * g as f64, "slope at {x}");
        }
    }

    #[test]
    fn non_finite_inputs_stay_visible() {
        for act in [Activation::Gelu, Activation::Silu] {
            let y = forward(act, &[f32::NAN, f32::INFINITY, 0.0]);
            assert!(y[0].is_nan(), "{act:?}");
            assert_eq!(y[1], f32::INFINITY, "{act:?}");
            assert_eq!(y[2], 0.0, "{act:?}");
            assert!(backward(act, &[f32::NAN], &[1.0])[0].is_nan(), "{act:?}");
            assert!(backward(act, &[1.0], &[f32::NAN])[0].is_nan(), "{act:?}");
        }
    }

    #[test]
    fn silu_matches_the_definition() {
        let x: Vec<f32> = grid().chain([-85.0, -200.0, 85.0, 200.0]).collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 5) as f32 * 0.5).collect();
        let y = forward(Activation::Silu, &x);
        let dx = backward(Activation::Silu, &x, &dy);
        for (((&x, &g), &y), &d) in x.iter().zip(&dy).zip(&y).zip(&dx) {
            let xf = x as f64;
            let s = 1.0 / (1.0 + (-xf).exp());
            let (ye, de) = (xf * s, g as f64 * s * (1.0 + xf * (1.0 - s)));
            assert!(
                (y as f64 - ye).abs() < 5e-7 * (1.0 + xf.abs()),
                "silu({x}) = {y}, expected {ye}"
            );
            assert!(
                (d as f64 - de).abs() < 1e-6 * g as f64 * (1.0 + xf.abs()),
                "silu'({x})·{g} = {d}, expected {de}"
            );
            assert!(
                y == 0.0 || y.abs() >= f32::MIN_POSITIVE,
                "silu({x}) = {y} is subnormal"
            );
            let h = 1e-4;
            let f = |x: f64| x / (1.0 + (-x).exp());
            let fd = (f(xf + h) - f(xf - h)) / (2.0 * h);
            assert!(
                (g as f64 * fd - de).abs() < 1e-6 * g as f64 * (1.0 + xf.abs()),
                "slope at {x}"
            );
        }
    }

    #[test]
    fn every_chunk_is_computed() {
        // Several parallel chunks and a ragged last one.
        let n = 3 * CHUNK + 17;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let y = forward(Activation::Gelu, &x);
        let dx = backward(Activation::Gelu, &x, &vec![1.0; n]);
        let ys = forward(Activation::Silu, &x);
        for i in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 5, n - 1] {
            assert_eq!(y[i], x[i] * cdf(x[i]), "element {i}");
            assert!(dx[i] > -0.2 && dx[i] < 1.2, "element {i}: {}", dx[i]);
            assert_eq!(ys[i], x[i] * sigmoid(x[i]), "element {i}");
        }
    }
}
