//! The model's attention on the CPU: per batch × head, the scores as one matrix product, a
//! softmax over each row in place, and the output as a second product — forward and backward,
//! over plain `f32` slices in the `[B, H, N, dh]` layout.
//!
//! burn's CPU attention (and its gradient, under autodiff, a chain of separate tensor
//! operations each walking the whole `[B, H, Nq, Nk]` score tensor) was 4.8× slower than
//! PyTorch's on the same two cores for the model's spatial attention. Here one `[Nq, Nk]` block
//! lives in a per-thread buffer while its head is worked on:
//!
//! - forward: `S = Q·Kᵀ`, `P = softmax(S·scale + bias)` row by row (keeping each row's
//!   log-sum-exp `lse`), `O = P·V`;
//! - backward, from `lse`: `P = exp(S·scale + bias − lse)` recomputed, `dV = Pᵀ·dO`,
//!   `dP = dO·Vᵀ`, `dS = P∘(dP − rowsum(dO∘O))·scale`, `dQ = dS·K`, `dK = dSᵀ·Q`.
//!
//! Heads run in parallel on native targets (rayon); each head's result depends only on its own
//! inputs, so results do not depend on the thread count.

use crate::conv_cpu::{matmul, with_scratch};

/// Sizes of one attention: `q [B, H, Nq, dh]`, `k, v [B, H, Nk, dh]`, `bias [B, Nk]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub dh: usize,
}

impl AttnShape {
    fn check(&self, q: &[f32], k: &[f32], v: &[f32], bias: &[f32]) {
        let bh = self.batch * self.heads;
        assert_eq!(q.len(), bh * self.nq * self.dh, "q is [B, H, Nq, dh]");
        assert_eq!(k.len(), bh * self.nk * self.dh, "k is [B, H, Nk, dh]");
        assert_eq!(v.len(), bh * self.nk * self.dh, "v is [B, H, Nk, dh]");
        assert_eq!(bias.len(), self.batch * self.nk, "bias is [B, Nk]");
    }
}

/// `e^x`, branch-free so that the compiler vectorises the loops it is in: `x = n·ln 2 + r`,
/// `|r| ≤ ln 2 / 2`, a degree-6 Taylor polynomial for `e^r` (relative error < 3e-7) scaled by
/// `2^n` through the exponent bits; `x > 88` is taken as 88. Below `−80` the result is exactly 0
/// (the softmax's shifted scores are ≤ 0, and a weight under e⁻⁸⁰ of the largest is nothing
/// next to it): masked keys (bias ≈ −1e4) must not come out as numbers near the smallest
/// normal float, which the normalisation and the matrix products would turn into subnormals —
/// each costing the CPU a microcode assist (a step with padded prompts ran 4× slower so).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to the nearest integer n, held in the sum's low mantissa bits:
    // bits(t) = bits(1.5·2²³) + n (integer arithmetic only, which vectorises).
    const ROUND: f32 = 12_582_912.0;
    let keep = x >= -80.0;
    let x = x.clamp(-80.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if keep { p * scale } else { 0.0 }
}

/// Lanes the row reductions keep apart, so that they vectorise (a float sum in one
/// accumulator cannot be reordered).
const LANES: usize = 16;

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn row_sum(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.into_iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Run `f(head index, q-side chunk, k-side chunk, k-side chunk)` for every batch × head, in
/// parallel where threads exist; `a` holds `per_a` elements a head, `b` and `c` `per_b` (the
/// backward's three gradients).
fn per_head<F>(a: &mut [f32], per_a: usize, b: &mut [f32], c: &mut [f32], per_b: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(per_a)
            .zip(b.par_chunks_mut(per_b))
            .zip(c.par_chunks_mut(per_b))
            .enumerate()
            .with_min_len(4)
            .for_each(|(i, ((a, b), c))| f(i, a, b, c));
    }
    #[cfg(target_arch = "wasm32")]
    for (i, ((a, b), c)) in a
        .chunks_mut(per_a)
        .zip(b.chunks_mut(per_b))
        .zip(c.chunks_mut(per_b))
        .enumerate()
    {
        f(i, a, b, c);
    }
}

/// `p [Nq, Nk]` (scores `q·kᵀ` on entry) → `exp(p·scale + bias − shift_i)` row by row, where
/// `shift_i` is `lse[i]` if given; otherwise the row is normalised (a softmax) and its
/// log-sum-exp written to `lse_out`. With AVX2 and FMA where the CPU has them (detected at run
/// time: the build targets baseline x86-64).
fn softmax_rows(
    p: &mut [f32],
    nk: usize,
    scale: f32,
    bias: &[f32],
    lse: Option<&[f32]>,
    lse_out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        unsafe { softmax_rows_avx2(p, nk, scale, bias, lse, lse_out) };
        return;
    }
    softmax_rows_body(p, nk, scale, bias, lse, lse_out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(
    p: &mut [f32],
    nk: usize,
    scale: f32,
    bias: &[f32],
    lse: Option<&[f32]>,
    lse_out: &mut [f32],
) {
    softmax_rows_body(p, nk, scale, bias, lse, lse_out);
}

#[inline(always)]
fn softmax_rows_body(
    p: &mut [f32],
    nk: usize,
    scale: f32,
    bias: &[f32],
    lse: Option<&[f32]>,
    lse_out: &mut [f32],
) {
    let bias = &bias[..nk];
    for (i, row) in p.chunks_exact_mut(nk).enumerate() {
        match lse {
            Some(lse) => {
                let shift = lse[i];
                for (s, &b) in row.iter_mut().zip(bias) {
                    *s = exp(*s * scale + b - shift);
                }
            }
            None => {
                for (s, &b) in row.iter_mut().zip(bias) {
                    *s = *s * scale + b;
                }
                let m = row_max(row);
                for s in row.iter_mut() {
                    *s = exp(*s - m);
                }
                let sum = row_sum(row);
                let inv = 1.0 / sum;
                for s in row.iter_mut() {
                    *s *= inv;
                }
                lse_out[i] = m + sum.ln();
            }
        }
    }
}

/// Forward: `(o [B, H, Nq, dh], lse [B, H, Nq])`.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    s: &AttnShape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    s.check(q, k, v, bias);
    let (nq, nk, dh) = (s.nq, s.nk, s.dh);
    let bh = s.batch * s.heads;
    let mut o = vec![0f32; bh * nq * dh];
    let mut lse = vec![0f32; bh * nq];
    if bh == 0 || nq == 0 || dh == 0 {
        return (o, lse);
    }
    with_heads(&mut o, nq * dh, &mut lse, nq, |i, ob, lb| {
        let (qb, kb, vb) = (
            &q[i * nq * dh..(i + 1) * nq * dh],
            &k[i * nk * dh..(i + 1) * nk * dh],
            &v[i * nk * dh..(i + 1) * nk * dh],
        );
        let bias = &bias[(i / s.heads) * nk..(i / s.heads + 1) * nk];
        with_scratch(nq * nk, |p| {
            // kᵀ [dh, Nk]: element (d, j) is k[j·dh + d].
            matmul(nq, nk, dh, p, false, qb, (dh, 1), kb, (1, dh));
            softmax_rows(p, nk, scale, bias, None, lb);
            matmul(nq, dh, nk, ob, false, p, (nk, 1), vb, (dh, 1));
        });
    });
    (o, lse)
}

/// The forward's two outputs per head (`o`, `lse`) through [`per_head`].
fn with_heads<F>(o: &mut [f32], per_o: usize, lse: &mut [f32], per_l: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        o.par_chunks_mut(per_o)
            .zip(lse.par_chunks_mut(per_l))
            .enumerate()
            .with_min_len(4)
            .for_each(|(i, (o, l))| f(i, o, l));
    }
    #[cfg(target_arch = "wasm32")]
    for (i, (o, l)) in o.chunks_mut(per_o).zip(lse.chunks_mut(per_l)).enumerate() {
        f(i, o, l);
    }
}

/// Backward, from the forward's `o` and `lse` and the output gradient `dout`:
/// `(dq [B, H, Nq, dh], dk, dv [B, H, Nk, dh])`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    o: &[f32],
    lse: &[f32],
    dout: &[f32],
    s: &AttnShape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    s.check(q, k, v, bias);
    let (nq, nk, dh) = (s.nq, s.nk, s.dh);
    let bh = s.batch * s.heads;
    assert_eq!(o.len(), q.len(), "o is [B, H, Nq, dh]");
    assert_eq!(dout.len(), q.len(), "dout is [B, H, Nq, dh]");
    assert_eq!(lse.len(), bh * nq, "lse is [B, H, Nq]");
    let mut dq = vec![0f32; bh * nq * dh];
    let mut dk = vec![0f32; bh * nk * dh];
    let mut dv = vec![0f32; bh * nk * dh];
    if bh == 0 || nq == 0 || nk == 0 || dh == 0 {
        return (dq, dk, dv);
    }
    per_head(
        &mut dq,
        nq * dh,
        &mut dk,
        &mut dv,
        nk * dh,
        |i, dqb, dkb, dvb| {
            let qs = i * nq * dh..(i + 1) * nq * dh;
            let ks = i * nk * dh..(i + 1) * nk * dh;
            let (qb, kb, vb) = (&q[qs.clone()], &k[ks.clone()], &v[ks]);
            let (ob, dob) = (&o[qs.clone()], &dout[qs]);
            let lb = &lse[i * nq..(i + 1) * nq];
            let bias = &bias[(i / s.heads) * nk..(i / s.heads + 1) * nk];
            with_scratch(2 * nq * nk, |buf| {
                let (p, dp) = buf.split_at_mut(nq * nk);
                matmul(nq, nk, dh, p, false, qb, (dh, 1), kb, (1, dh));
                softmax_rows(p, nk, scale, bias, Some(lb), &mut []);
                // Pᵀ [Nk, Nq]: element (j, i) is p[i·Nk + j].
                matmul(nk, dh, nq, dvb, false, p, (1, nk), dob, (dh, 1));
                // Vᵀ [dh, Nk]: element (d, j) is v[j·dh + d].
                matmul(nq, nk, dh, dp, false, dob, (dh, 1), vb, (1, dh));
                for (r, (dpr, pr)) in dp.chunks_exact_mut(nk).zip(p.chunks_exact(nk)).enumerate() {
                    let d: f32 = dob[r * dh..(r + 1) * dh]
                        .iter()
                        .zip(&ob[r * dh..(r + 1) * dh])
                        .map(|(a, b)| a * b)
                        .sum();
                    for (g, &pv) in dpr.iter_mut().zip(pr) {
                        *g = pv * (*g - d) * scale;
                    }
                }
                matmul(nq, dh, nk, dqb, false, dp, (nk, 1), kb, (dh, 1));
                matmul(nk, dh, nq, dkb, false, dp, (1, nk), qb, (dh, 1));
            });
        },
    );
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cpu::tests::values;

    /// Attention by its definition, in f64: `(o, lse)`.
    fn direct(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: &[f32],
        s: &AttnShape,
        scale: f32,
    ) -> (Vec<f64>, Vec<f64>) {
        let (nq, nk, dh) = (s.nq, s.nk, s.dh);
        let mut o = vec![0f64; s.batch * s.heads * nq * dh];
        let mut lse = vec![0f64; s.batch * s.heads * nq];
        for b in 0..s.batch {
            for h in 0..s.heads {
                let i = b * s.heads + h;
                for r in 0..nq {
                    let scores: Vec<f64> = (0..nk)
                        .map(|j| {
                            let dot: f64 = (0..dh)
                                .map(|d| {
                                    q[(i * nq + r) * dh + d] as f64
                                        * k[(i * nk + j) * dh + d] as f64
                                })
                                .sum();
                            dot * scale as f64 + bias[b * nk + j] as f64
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let l: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    lse[i * nq + r] = m + l.ln();
                    for d in 0..dh {
                        o[(i * nq + r) * dh + d] = (0..nk)
                            .map(|j| (scores[j] - m).exp() / l * v[(i * nk + j) * dh + d] as f64)
                            .sum();
                    }
                }
            }
        }
        (o, lse)
    }

    fn max_diff(a: &[f32], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -80.0 + 168.0 * i as f64 / 200_000.0;
            let got = exp(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(-80.5), 0.0);
        assert!(
            exp(-79.9) > f32::MIN_POSITIVE * 1e3,
            "normal, far from subnormal"
        );
    }

    #[test]
    fn forward_matches_the_definition() {
        // Cross-attention shapes (Nq ≠ Nk), a masked key, two heads, odd sizes.
        let s = AttnShape {
            batch: 2,
            heads: 3,
            nq: 7,
            nk: 5,
            dh: 6,
        };
        let (q, k, v) = (
            values(2 * 3 * 7 * 6, 1),
            values(2 * 3 * 5 * 6, 2),
            values(2 * 3 * 5 * 6, 3),
        );
        let mut bias = values(2 * 5, 4);
        bias[4] = -1e4;
        let scale = 1.0 / (6f32).sqrt();
        let (o, lse) = forward(&q, &k, &v, &bias, &s, scale);
        let (o_ref, lse_ref) = direct(&q, &k, &v, &bias, &s, scale);
        assert!(max_diff(&o, &o_ref) < 1e-5, "o {}", max_diff(&o, &o_ref));
        assert!(
            max_diff(&lse, &lse_ref) < 1e-5,
            "lse {}",
            max_diff(&lse, &lse_ref)
        );
    }

    /// The gradients against central differences of `L = Σ o∘w` in f64 (a fixed weighting `w`
    /// as the output gradient).
    #[test]
    fn backward_matches_finite_differences() {
        let s = AttnShape {
            batch: 2,
            heads: 2,
            nq: 4,
            nk: 6,
            dh: 3,
        };
        let (q, k, v) = (
            values(2 * 2 * 4 * 3, 5),
            values(2 * 2 * 6 * 3, 6),
            values(2 * 2 * 6 * 3, 7),
        );
        let mut bias = values(2 * 6, 8);
        bias[7] = -1e4;
        let w = values(2 * 2 * 4 * 3, 9);
        let scale = 0.7;
        let (o, lse) = forward(&q, &k, &v, &bias, &s, scale);
        let (dq, dk, dv) = backward(&q, &k, &v, &bias, &o, &lse, &w, &s, scale);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let (o, _) = direct(q, k, v, &bias, &s, scale);
            o.iter().zip(&w).map(|(a, &b)| a * b as f64).sum()
        };
        let eps = 1e-3f32;
        let check = |name: &str, which: usize, grad: &[f32]| {
            for idx in 0..grad.len() {
                let mut inputs = [q.clone(), k.clone(), v.clone()];
                inputs[which][idx] += eps;
                let up = loss(&inputs[0], &inputs[1], &inputs[2]);
                inputs[which][idx] -= 2.0 * eps;
                let down = loss(&inputs[0], &inputs[1], &inputs[2]);
                let numeric = (up - down) / (2.0 * eps as f64);
                assert!(
                    (numeric - grad[idx] as f64).abs() < 2e-3,
                    "d{name}[{idx}]: {} against {numeric}",
                    grad[idx]
                );
            }
        };
        check("q", 0, &dq);
        check("k", 1, &dk);
        check("v", 2, &dv);
        // A masked key gets no gradient.
        let masked = 1;
        for h in 0..2 {
            for d in 0..3 {
                let i = (2 + h) * 6 + masked;
                assert!(dk[i * 3 + d].abs() < 1e-6 && dv[i * 3 + d].abs() < 1e-6);
            }
        }
    }
}
