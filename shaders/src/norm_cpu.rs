//! Normalisation of rows on the CPU, without affine parameters, forward and gradient, over plain
//! `f32` slices: `x [R, S]` → `y = (x − mean)·rstd` per row, `rstd = 1/√(var + eps)` (biased
//! variance), with each row's `(mean, rstd)` kept for the gradient. The model's group norm is
//! this on `[B·G, (C/G)·T·H·W]`.
//!
//! burn's composition (mean, subtract, square, mean, add, square root, divide; its gradient
//! through each) is about six passes over the tensor forward and ten backward, each into a
//! fresh tensor and on one thread below four million elements; here two passes forward and two
//! backward, rows in parallel on native targets. Each row is computed on its own, so results do
//! not depend on the thread count.

/// Lanes the row sums keep apart (so that they vectorise).
const LANES: usize = 16;

/// `Σ f(i)` over a row in `LANES` partial sums, added in f64.
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    let tail: f64 = (full..len).map(|i| f(i) as f64).sum();
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail
}

/// Run `f(row index, row of out, row's stats)` for every row, in parallel where threads exist.
fn per_row<F>(out: &mut [f32], stats: &mut [f32], s: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(s)
            .zip(stats.par_chunks_mut(2))
            .enumerate()
            .for_each(|(r, (o, st))| f(r, o, st));
    }
    #[cfg(target_arch = "wasm32")]
    for (r, (o, st)) in out.chunks_mut(s).zip(stats.chunks_mut(2)).enumerate() {
        f(r, o, st);
    }
}

/// `(y [R, S], stats [R, 2])` with `stats[r] = (mean, rstd)`.
pub fn forward(x: &[f32], rows: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    assert!(rows > 0 && x.len().is_multiple_of(rows), "x is [R, S]");
    let s = x.len() / rows;
    let mut y = vec![0f32; x.len()];
    let mut stats = vec![0f32; 2 * rows];
    if s == 0 {
        return (y, stats);
    }
    per_row(&mut y, &mut stats, s, |r, yr, st| {
        let xr = &x[r * s..(r + 1) * s];
        let mean = (lane_sum(s, |i| xr[i]) / s as f64) as f32;
        let var = lane_sum(s, |i| (xr[i] - mean) * (xr[i] - mean)) / s as f64;
        let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
        for (y, &x) in yr.iter_mut().zip(xr) {
            *y = (x - mean) * rstd;
        }
        st[0] = mean;
        st[1] = rstd;
    });
    (y, stats)
}

/// The gradient at `x` given the output's `dy`: with `xh = (x − mean)·rstd`,
/// `dx = rstd·(dy − mean(dy) − xh·mean(dy·xh))` per row.
pub fn backward(x: &[f32], stats: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "x and dy have one shape");
    let rows = stats.len() / 2;
    assert!(rows > 0 && x.len().is_multiple_of(rows), "stats is [R, 2]");
    let s = x.len() / rows;
    let mut dx = vec![0f32; x.len()];
    if s == 0 {
        return dx;
    }
    let mut unused = vec![0f32; 2 * rows];
    per_row(&mut dx, &mut unused, s, |r, dxr, _| {
        let (xr, gr) = (&x[r * s..(r + 1) * s], &dy[r * s..(r + 1) * s]);
        let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
        let mg = (lane_sum(s, |i| gr[i]) / s as f64) as f32;
        let mgx = (lane_sum(s, |i| gr[i] * (xr[i] - mean) * rstd) / s as f64) as f32;
        for ((d, &x), &g) in dxr.iter_mut().zip(xr).zip(gr) {
            *d = rstd * (g - mg - (x - mean) * rstd * mgx);
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cpu::tests::values;

    /// Forward against the definition in f64; the gradient against central differences of
    /// `⟨w, y(x)⟩` (in f64, from the same definition), on rows of odd and lane-multiple lengths.
    #[test]
    fn matches_the_definition_and_its_slope() {
        fn reference(x: &[f64], s: usize, eps: f64) -> Vec<f64> {
            x.chunks(s)
                .flat_map(|row| {
                    let mean = row.iter().sum::<f64>() / s as f64;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s as f64;
                    let rstd = 1.0 / (var + eps).sqrt();
                    row.iter()
                        .map(move |v| (v - mean) * rstd)
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        let eps = 1e-6;
        for (rows, s) in [(1, 1), (3, 7), (4, 48), (2, 1000)] {
            let x: Vec<f32> = values(rows * s, 1).iter().map(|v| 3.0 * v + 0.5).collect();
            let w = values(rows * s, 2);
            let (y, stats) = forward(&x, rows, eps);
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let want = reference(&x64, s, eps as f64);
            for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() < 1e-5 * w.abs().max(1.0),
                    "y[{i}]: {g} vs {w}"
                );
            }
            let dx = backward(&x, &stats, &w);
            let h = 1e-4;
            for i in (0..rows * s).step_by((rows * s / 13).max(1)) {
                let at = |d: f64| {
                    let mut xp = x64.clone();
                    xp[i] += d;
                    reference(&xp, s, eps as f64)
                        .iter()
                        .zip(&w)
                        .map(|(y, &w)| y * w as f64)
                        .sum::<f64>()
                };
                let want = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (dx[i] as f64 - want).abs() < 1e-3 * want.abs().max(1.0),
                    "dx[{i}] ({rows}×{s}): {} vs {want}",
                    dx[i]
                );
            }
        }
    }
}
