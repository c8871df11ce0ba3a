//! The optimizer's update on the CPU: AdamW and the EMA over one parameter's elements in one pass
//! (the trainer's fused CPU update calls it per parameter, in parallel). Plain slices, so the
//! compiler vectorises the loop; this crate is built with full optimisation in every profile.

/// The constants of one AdamW step (the same for every parameter of a step).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// Gradient factor (the global-norm clip; 1 when not clipped).
    pub scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    pub c1: f32,
    pub c2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub lr: f32,
}

/// One AdamW step over `w` with gradient `g` and moments `m`, `v`, in place:
/// `g ← scale·g`, `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
/// `w ← w − lr·((m/c1)/(√(v/c2) + ε) + wd·w)`; then, with `avg = (a, d)`, the EMA
/// `a ← d·a + (1 − d)·w` of the new weights. All slices have one length.
pub fn adamw_ema(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    avg: Option<(&mut [f32], f32)>,
    s: &AdamWStep,
) {
    let n = w.len();
    assert!(g.len() == n && m.len() == n && v.len() == n, "one length");
    let (b1, b2) = (s.beta1, s.beta2);
    match avg {
        Some((a, d)) => {
            assert_eq!(a.len(), n, "one length");
            for i in 0..n {
                let gi = g[i] * s.scale;
                m[i] = m[i] * b1 + gi * (1.0 - b1);
                v[i] = v[i] * b2 + gi * gi * (1.0 - b2);
                let update = (m[i] / s.c1) / ((v[i] / s.c2).sqrt() + s.eps);
                w[i] -= (update + w[i] * s.weight_decay) * s.lr;
                a[i] = a[i] * d + w[i] * (1.0 - d);
            }
        }
        None => {
            for i in 0..n {
                let gi = g[i] * s.scale;
                m[i] = m[i] * b1 + gi * (1.0 - b1);
                v[i] = v[i] * b2 + gi * gi * (1.0 - b2);
                let update = (m[i] / s.c1) / ((v[i] / s.c2).sqrt() + s.eps);
                w[i] -= (update + w[i] * s.weight_decay) * s.lr;
            }
        }
    }
}

/// The EMA alone (a parameter without a gradient): `a ← d·a + (1 − d)·w`.
pub fn ema(a: &mut [f32], w: &[f32], d: f32) {
    assert_eq!(a.len(), w.len(), "one length");
    for (a, &w) in a.iter_mut().zip(w) {
        *a = *a * d + w * (1.0 - d);
    }
}

/// Σ x² in f64.
pub fn sum_squares(x: &[f32]) -> f64 {
    // Eight partial sums: vectorisable, and less rounding than one running sum.
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += (c[k] as f64) * (c[k] as f64);
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|&r| (r as f64) * (r as f64)).sum::<f64>()
}
