//! The model's convolutions on the CPU: explicit im2col and one matrix product per clip, forward
//! and both gradients, over plain `f32` slices in the `[B, C, T, H, W]` layout.
//!
//! burn's CPU convolution computes the weight gradient as a convolution whose kernel is the
//! whole output gradient (`x` and `dy` with batch and channel swapped), and the input gradient
//! as a transposed convolution; for the model's pixel-resolution `1×3×3` convolutions
//! (16 → 16 channels over 8 × 32 × 32) that made forward + backward 7.9× slower than PyTorch on
//! the same two cores. Here all three are matrix products of the same shape family:
//!
//! - forward: `y[b] = W · cols(x[b]) + bias` (`W` `[Co, K]`, `cols` `[K, N]`, `K = Ci·KT·KH·KW`,
//!   `N = T·H·W`);
//! - input gradient: `dx[b] = col2im(Wᵀ · dy[b])`;
//! - weight gradient: `dW = Σ_b dy[b] · cols(x[b])ᵀ`, bias gradient `Σ_{b,n} dy[b]`.
//!
//! `cols` is rebuilt in the backward pass rather than kept (4.7 MB per clip at 16 channels), in
//! a buffer each thread keeps.
//! Clips run in parallel on native targets (rayon); the weight gradient sums the clips' partial
//! products in clip order, so results do not depend on the thread count.
//! Each clip is done a few frames at a time ([`frames_per_chunk`]): the chunk's im2col matrix
//! stays in the core's cache between being written and being multiplied (a whole clip's, 4.7 MB
//! at 16 channels over 8 × 32 × 32, went out to memory and back).

use std::ops::Range;

/// Sizes of one convolution: stride 1, zero padding `(KT/2, KH/2, KW/2)`, odd kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub kt: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvShape {
    /// Rows of the im2col matrix: `Ci·KT·KH·KW`.
    pub fn k(&self) -> usize {
        self.c_in * self.kt * self.kh * self.kw
    }

    /// Positions per clip: `T·H·W`.
    pub fn n(&self) -> usize {
        self.t * self.h * self.w
    }

    /// Values in one clip's channels-last copy with its zero border ([`pad_channels_last`]).
    pub fn padded_len(&self) -> usize {
        let pad = |n: usize, k: usize| n + 2 * (k / 2);
        pad(self.t, self.kt) * pad(self.h, self.kh) * pad(self.w, self.kw) * self.c_in
    }

    fn check(&self) {
        assert!(
            self.kt % 2 == 1 && self.kh % 2 == 1 && self.kw % 2 == 1,
            "odd kernel sizes"
        );
    }
}

/// For each kernel tap, the range of output columns `[lo, hi)` whose source column
/// `xx + off` lies inside `[0, w)`, and `off`.
fn span(w: usize, tap: usize, k: usize) -> (usize, usize, isize) {
    let off = tap as isize - (k / 2) as isize;
    let lo = (-off).max(0) as usize;
    let hi = (w as isize - off).min(w as isize).max(0) as usize;
    (lo.min(hi), hi, off)
}

/// `cols [K, N]` of one clip `x [Ci, T, H, W]`: row `(c, dt, dy, dx)` holds `x[c]` shifted by
/// the tap's offset, zero outside.
pub fn im2col(x: &[f32], s: &ConvShape, cols: &mut [f32]) {
    im2col_frames(x, s, 0..s.t, cols);
}

/// [`im2col`] for the output frames `frames` only: `cols [K, F·H·W]`, `F` the frames' count.
pub fn im2col_frames(x: &[f32], s: &ConvShape, frames: Range<usize>, cols: &mut [f32]) {
    let (t, h, w, n) = (s.t, s.h, s.w, s.n());
    let nc = frames.len() * h * w;
    debug_assert_eq!(x.len(), s.c_in * n);
    debug_assert_eq!(cols.len(), s.k() * nc);
    let t0 = frames.start;
    let mut rows = cols.chunks_exact_mut(nc);
    for c in 0..s.c_in {
        let xc = &x[c * n..(c + 1) * n];
        for dt in 0..s.kt {
            let ot = dt as isize - (s.kt / 2) as isize;
            for dy in 0..s.kh {
                let oy = dy as isize - (s.kh / 2) as isize;
                for dx in 0..s.kw {
                    let (lo, hi, ox) = span(w, dx, s.kw);
                    let row = rows.next().expect("K rows");
                    for tt in frames.clone() {
                        let st = tt as isize + ot;
                        for yy in 0..h {
                            let sy = yy as isize + oy;
                            let at = ((tt - t0) * h + yy) * w;
                            let dst = &mut row[at..at + w];
                            if st < 0 || st >= t as isize || sy < 0 || sy >= h as isize {
                                dst.fill(0.0);
                                continue;
                            }
                            let src = &xc[(st as usize * h + sy as usize) * w..][..w];
                            dst[..lo].fill(0.0);
                            dst[hi..].fill(0.0);
                            let (a, b) = ((lo as isize + ox) as usize, (hi as isize + ox) as usize);
                            dst[lo..hi].copy_from_slice(&src[a..b]);
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each row of `cols [K, N]` back onto the positions it was read
/// from, `dx [Ci, T, H, W]` (overwritten).
pub fn col2im(cols: &[f32], s: &ConvShape, dx: &mut [f32]) {
    dx.fill(0.0);
    col2im_add_frames(cols, s, 0..s.t, dx);
}

/// The adjoint of [`im2col_frames`]: adds `cols [K, F·H·W]` (the output frames `frames`) onto
/// `dx [Ci, T, H, W]`.
pub fn col2im_add_frames(cols: &[f32], s: &ConvShape, frames: Range<usize>, dx: &mut [f32]) {
    let (t, h, w, n) = (s.t, s.h, s.w, s.n());
    let nc = frames.len() * h * w;
    debug_assert_eq!(cols.len(), s.k() * nc);
    let t0 = frames.start;
    let mut rows = cols.chunks_exact(nc);
    for c in 0..s.c_in {
        let xc = &mut dx[c * n..(c + 1) * n];
        for dt in 0..s.kt {
            let ot = dt as isize - (s.kt / 2) as isize;
            for dy in 0..s.kh {
                let oy = dy as isize - (s.kh / 2) as isize;
                for dx_ in 0..s.kw {
                    let (lo, hi, ox) = span(w, dx_, s.kw);
                    let row = rows.next().expect("K rows");
                    for tt in frames.clone() {
                        let st = tt as isize + ot;
                        if st < 0 || st >= t as isize {
                            continue;
                        }
                        for yy in 0..h {
                            let sy = yy as isize + oy;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            let at = ((tt - t0) * h + yy) * w;
                            let src = &row[at + lo..at + hi];
                            let base = (st as usize * h + sy as usize) * w;
                            let (a, b) = ((lo as isize + ox) as usize, (hi as isize + ox) as usize);
                            for (d, &v) in xc[base + a..base + b].iter_mut().zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst [m, n] = (dst if accumulate) + lhs [m, k] · rhs [k, n]`, each operand given by its row
/// and column strides (elements). Single-threaded: callers parallelise over clips.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    matmul_into(
        m,
        n,
        k,
        (dst, (n, 1)),
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
    );
}

/// [`matmul`] into a `dst` given by its row and column strides (a block of a wider matrix, or
/// a transposed one). The strides must not make two elements of `dst` share a place.
#[allow(clippy::too_many_arguments)]
fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    (dst, (dst_rs, dst_cs)): (&mut [f32], (usize, usize)),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(
        (dst_cs >= 1 && dst_rs >= n * dst_cs) || (dst_rs >= 1 && dst_cs >= m * dst_rs),
        "dst's elements are distinct"
    );
    assert!(dst.len() > last(dst_rs, dst_cs, m, n), "dst in bounds");
    assert!(
        k == 0 || lhs.len() > last(lhs_rs, lhs_cs, m, k),
        "lhs in bounds"
    );
    assert!(
        k == 0 || rhs.len() > last(rhs_rs, rhs_cs, k, n),
        "rhs in bounds"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dst_rs + c * dst_cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: every element the product reads or writes is inside the slices (asserted above:
    // the largest offset of each operand is in bounds, strides are non-negative), `dst`'s
    // strides give each of its elements its own place (asserted), and `dst` does not alias the
    // operands (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `f` with this thread's scratch buffer of `len` elements (contents unspecified: callers
/// overwrite it). Kept between calls: a fresh 4.7 MB buffer per clip costs page faults and
/// zeroing comparable to the product itself.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Run `f(index, slice)` for every `per`-element slice of `out` (a clip's output; a chunk of an
/// element-wise pass), in parallel where threads exist.
pub(crate) fn per_clip<F>(out: &mut [f32], per: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(b, o)| f(b, o));
    }
    #[cfg(target_arch = "wasm32")]
    for (b, o) in out.chunks_mut(per).enumerate() {
        f(b, o);
    }
}

/// Frames per im2col chunk: as many as keep the chunk's matrix `[K, F·H·W]` within 512 KB
/// (at least one).
pub fn frames_per_chunk(s: &ConvShape) -> usize {
    const CHUNK_BYTES: usize = 512 * 1024;
    let per_frame = s.k() * s.h * s.w * std::mem::size_of::<f32>();
    (CHUNK_BYTES / per_frame.max(1)).clamp(1, s.t.max(1))
}

/// The clip's frames in chunks of [`frames_per_chunk`].
fn chunks(s: &ConvShape) -> impl Iterator<Item = Range<usize>> {
    let step = frames_per_chunk(s);
    let t = s.t;
    (0..t).step_by(step).map(move |t0| t0..(t0 + step).min(t))
}

/// Forward: `x [B, Ci, T, H, W]`, `weight [Co, Ci, KT, KH, KW]`, `bias [Co]` → `[B, Co, T, H, W]`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], s: &ConvShape) -> Vec<f32> {
    s.check();
    let (k, n, hw) = (s.k(), s.n(), s.h * s.w);
    assert_eq!(x.len(), s.batch * s.c_in * n, "x is [B, Ci, T, H, W]");
    assert_eq!(weight.len(), s.c_out * k, "weight is [Co, Ci, KT, KH, KW]");
    assert_eq!(bias.len(), s.c_out, "bias is [Co]");
    let mut y = vec![0f32; s.batch * s.c_out * n];
    per_clip(&mut y, s.c_out * n, |b, yb| {
        let xb = &x[b * s.c_in * n..(b + 1) * s.c_in * n];
        for (row, &bi) in yb.chunks_exact_mut(n).zip(bias) {
            row.fill(bi);
        }
        for frames in chunks(s) {
            let (at, nc) = (frames.start * hw, frames.len() * hw);
            with_scratch(k * nc, |cols| {
                im2col_frames(xb, s, frames, cols);
                // y[b][:, chunk] += W · cols, rows N apart.
                matmul_into(
                    s.c_out,
                    nc,
                    k,
                    (&mut yb[at..], (n, 1)),
                    true,
                    weight,
                    (k, 1),
                    cols,
                    (nc, 1),
                );
            });
        }
    });
    y
}

/// Input gradient: `dx [B, Ci, T, H, W]` from `dy [B, Co, T, H, W]`.
pub fn backward_x(weight: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    s.check();
    let (k, n, hw) = (s.k(), s.n(), s.h * s.w);
    assert_eq!(dy.len(), s.batch * s.c_out * n, "dy is [B, Co, T, H, W]");
    assert_eq!(weight.len(), s.c_out * k, "weight is [Co, Ci, KT, KH, KW]");
    let mut dx = vec![0f32; s.batch * s.c_in * n];
    per_clip(&mut dx, s.c_in * n, |b, dxb| {
        let dyb = &dy[b * s.c_out * n..(b + 1) * s.c_out * n];
        for frames in chunks(s) {
            let (at, nc) = (frames.start * hw, frames.len() * hw);
            with_scratch(k * nc, |cols| {
                // Wᵀ [K, Co]: element (r, c) of Wᵀ is weight[c·K + r]; dy[b][:, chunk] rows N apart.
                matmul(
                    k,
                    nc,
                    s.c_out,
                    cols,
                    false,
                    weight,
                    (1, k),
                    &dyb[at..],
                    (n, 1),
                );
                col2im_add_frames(cols, s, frames, dxb);
            });
        }
    });
    dx
}

/// Weight and bias gradients: `(dW [Co, Ci, KT, KH, KW], dbias [Co])`.
///
/// The product's sum runs over positions, so one operand has to be read across its rows: with
/// the channels-first im2col `[K, N]` that was gemm packing a 144-row matrix against its layout,
/// four fifths of the pass (16 → 16 channels, 1×3×3, 8 × 32 × 32: 15 ms of 18 for 16 clips on
/// two cores). Here the clip is first copied channels-last with its zero border
/// ([`pad_channels_last`]), its im2col is written positions-major ([`im2col_positions`]: each
/// row a few contiguous runs of `KW·Ci` values), which is the column-major `[K', N]` gemm reads
/// directly, and `dWᵀ = cols · dyᵀ` comes out in the tap-major order `K' = (dt, dy, dx, c)`,
/// permuted back to `[Co, Ci, KT, KH, KW]` when the clips' partial sums are added.
pub fn backward_w(x: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f32>, Vec<f32>) {
    s.check();
    let (k, n, hw) = (s.k(), s.n(), s.h * s.w);
    assert_eq!(x.len(), s.batch * s.c_in * n, "x is [B, Ci, T, H, W]");
    assert_eq!(dy.len(), s.batch * s.c_out * n, "dy is [B, Co, T, H, W]");
    let padded = s.padded_len();
    // One partial dW' (and dbias) per clip, summed in clip order below: deterministic whatever
    // the threads.
    let per = s.c_out * k + s.c_out;
    let mut partial = vec![0f32; s.batch * per];
    per_clip(&mut partial, per, |b, part| {
        let xb = &x[b * s.c_in * n..(b + 1) * s.c_in * n];
        let dyb = &dy[b * s.c_out * n..(b + 1) * s.c_out * n];
        let (dwb, dbb) = part.split_at_mut(s.c_out * k);
        let chunk = k * s.h * s.w * frames_per_chunk(s);
        with_scratch(padded + chunk, |scratch| {
            let (xp, cols) = scratch.split_at_mut(padded);
            pad_channels_last(xb, s, xp);
            for (i, frames) in chunks(s).enumerate() {
                let (at, nc) = (frames.start * hw, frames.len() * hw);
                let cols = &mut cols[..k * nc];
                im2col_positions(xp, s, frames, cols);
                // dW'ᵀ [K', Co] (+)= cols [K', nc] · dyᵀ [nc, Co]: cols element (r, c) is
                // cols[c·K + r], dyᵀ's is dy[b][c·N + at + r], dW'ᵀ's is dW'[c·K + r].
                matmul_into(
                    k,
                    s.c_out,
                    nc,
                    (dwb, (1, k)),
                    i > 0,
                    cols,
                    (1, k),
                    &dyb[at..],
                    (1, n),
                );
            }
        });
        for (acc, row) in dbb.iter_mut().zip(dyb.chunks_exact(n)) {
            *acc = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
        }
    });
    let taps = s.kt * s.kh * s.kw;
    let mut dw = vec![0f32; s.c_out * k];
    let mut dbias = vec![0f64; s.c_out];
    for part in partial.chunks_exact(per) {
        let (p, pb) = part.split_at(s.c_out * k);
        for (dwo, po) in dw.chunks_exact_mut(k).zip(p.chunks_exact(k)) {
            // po is tap-major (tap, c); dwo channel-major (c, tap).
            for (tap, pt) in po.chunks_exact(s.c_in).enumerate() {
                for (c, &v) in pt.iter().enumerate() {
                    dwo[c * taps + tap] += v;
                }
            }
        }
        for (acc, &v) in dbias.iter_mut().zip(pb) {
            *acc += v as f64;
        }
    }
    (dw, dbias.into_iter().map(|v| v as f32).collect())
}

/// One clip `x [Ci, T, H, W]` copied channels-last with the convolution's zero border:
/// `xp [T + 2·(KT/2), H + 2·(KH/2), W + 2·(KW/2), Ci]` ([`ConvShape::padded_len`] values).
pub fn pad_channels_last(x: &[f32], s: &ConvShape, xp: &mut [f32]) {
    let (pt, ph, pw) = (s.kt / 2, s.kh / 2, s.kw / 2);
    let (hp, wp, ci, n) = (s.h + 2 * ph, s.w + 2 * pw, s.c_in, s.n());
    debug_assert_eq!(x.len(), ci * n);
    debug_assert_eq!(xp.len(), s.padded_len());
    xp.fill(0.0);
    for t in 0..s.t {
        for y in 0..s.h {
            let row = &mut xp[(((t + pt) * hp + y + ph) * wp + pw) * ci..][..s.w * ci];
            let src = (t * s.h + y) * s.w;
            for c in 0..ci {
                let xs = &x[c * n + src..][..s.w];
                for (px, &v) in row.chunks_exact_mut(ci).zip(xs) {
                    px[c] = v;
                }
            }
        }
    }
}

/// The positions-major im2col of the output frames `frames`, from [`pad_channels_last`]'s
/// `xp`: `cols [F·H·W, K']`, row `(t, y, x)` holding, for each `(dt, dy)`, the `KW·Ci` values
/// `xp[t + dt, y + dy, x .. x + KW, :]` — the taps in the order `K' = (dt, dy, dx, c)`.
pub fn im2col_positions(xp: &[f32], s: &ConvShape, frames: Range<usize>, cols: &mut [f32]) {
    let (hp, wp, ci) = (s.h + 2 * (s.kh / 2), s.w + 2 * (s.kw / 2), s.c_in);
    let (k, seg) = (s.k(), s.kw * ci);
    debug_assert_eq!(cols.len(), frames.len() * s.h * s.w * k);
    let mut rows = cols.chunks_exact_mut(k);
    for t in frames {
        for y in 0..s.h {
            for x in 0..s.w {
                let row = rows.next().expect("a row per position");
                for (j, dst) in row.chunks_exact_mut(seg).enumerate() {
                    let (dt, dy) = (j / s.kh, j % s.kh);
                    let src = &xp[(((t + dt) * hp + y + dy) * wp + x) * ci..][..seg];
                    if seg < 32 {
                        // Short runs (the 3-channel stem: 9 values): a call to memcpy per run
                        // cost more than the copy.
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = v;
                        }
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    #[allow(clippy::needless_range_loop)]
    fn direct(x: &[f32], wt: &[f32], bias: &[f32], s: &ConvShape) -> Vec<f64> {
        let (t, h, w) = (s.t as isize, s.h as isize, s.w as isize);
        let mut y = vec![0f64; s.batch * s.c_out * s.n()];
        for b in 0..s.batch {
            for o in 0..s.c_out {
                for tt in 0..t {
                    for yy in 0..h {
                        for xx in 0..w {
                            let mut acc = bias[o] as f64;
                            for c in 0..s.c_in {
                                for dt in 0..s.kt {
                                    for dy in 0..s.kh {
                                        for dx in 0..s.kw {
                                            let st = tt + dt as isize - (s.kt / 2) as isize;
                                            let sy = yy + dy as isize - (s.kh / 2) as isize;
                                            let sx = xx + dx as isize - (s.kw / 2) as isize;
                                            if st < 0
                                                || st >= t
                                                || sy < 0
                                                || sy >= h
                                                || sx < 0
                                                || sx >= w
                                            {
                                                continue;
                                            }
                                            let xi =
                                                (((b * s.c_in + c) as isize * t + st) * h + sy) * w
                                                    + sx;
                                            let wi = (((o * s.c_in + c) * s.kt + dt) * s.kh + dy)
                                                * s.kw
                                                + dx;
                                            acc += x[xi as usize] as f64 * wt[wi] as f64;
                                        }
                                    }
                                }
                            }
                            let yi = (((b * s.c_out + o) as isize * t + tt) * h + yy) * w + xx;
                            y[yi as usize] = acc;
                        }
                    }
                }
            }
        }
        y
    }

    /// `n` pseudo-random values in [−1, 1] (xorshift from `seed`).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// The last three are done in several im2col chunks (checked below): one frame at a time
    /// (a 1×3×3 and a 3×3×3 kernel, whose chunks read neighbouring frames), and chunks of
    /// four frames that do not divide the clip's seven.
    const SHAPES: [ConvShape; 6] = [
        ConvShape {
            batch: 2,
            c_in: 3,
            c_out: 4,
            t: 3,
            h: 5,
            w: 6,
            kt: 1,
            kh: 3,
            kw: 3,
        },
        ConvShape {
            batch: 3,
            c_in: 2,
            c_out: 5,
            t: 4,
            h: 4,
            w: 3,
            kt: 3,
            kh: 3,
            kw: 3,
        },
        ConvShape {
            batch: 1,
            c_in: 4,
            c_out: 2,
            t: 2,
            h: 2,
            w: 2,
            kt: 1,
            kh: 5,
            kw: 3,
        },
        ConvShape {
            batch: 1,
            c_in: 16,
            c_out: 16,
            t: 3,
            h: 20,
            w: 24,
            kt: 1,
            kh: 3,
            kw: 3,
        },
        ConvShape {
            batch: 2,
            c_in: 12,
            c_out: 3,
            t: 4,
            h: 16,
            w: 16,
            kt: 3,
            kh: 3,
            kw: 3,
        },
        ConvShape {
            batch: 2,
            c_in: 4,
            c_out: 3,
            t: 7,
            h: 30,
            w: 30,
            kt: 1,
            kh: 3,
            kw: 3,
        },
    ];

    #[test]
    fn large_clips_go_in_several_chunks() {
        let per: Vec<usize> = SHAPES.iter().map(frames_per_chunk).collect();
        assert_eq!(per, [3, 4, 2, 1, 1, 4]);
        assert_eq!(chunks(&SHAPES[5]).collect::<Vec<_>>(), [0..4, 4..7]);
    }

    #[test]
    fn forward_matches_the_definition() {
        for s in SHAPES {
            let x = values(s.batch * s.c_in * s.n(), 1);
            let wt = values(s.c_out * s.k(), 2);
            let bias = values(s.c_out, 3);
            let got = forward(&x, &wt, &bias, &s);
            let want = direct(&x, &wt, &bias, &s);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() < 1e-5 * w.abs().max(1.0),
                    "{s:?}: {g} vs {w}"
                );
            }
        }
    }

    /// The weight and bias gradients by their definitions, in f64:
    /// `dW[o, c, tap] = Σ_{b, p} dy[b, o, p] · x[b, c, p + tap]`, `dbias[o] = Σ_{b, p} dy[b, o, p]`.
    #[test]
    fn weight_gradient_matches_the_definition() {
        for s in SHAPES {
            let x = values(s.batch * s.c_in * s.n(), 8);
            let dy = values(s.batch * s.c_out * s.n(), 9);
            let (dw, db) = backward_w(&x, &dy, &s);
            let (t, h, w) = (s.t as isize, s.h as isize, s.w as isize);
            let n = s.n();
            for o in 0..s.c_out {
                let want_b: f64 = (0..s.batch)
                    .flat_map(|b| &dy[(b * s.c_out + o) * n..][..n])
                    .map(|&v| v as f64)
                    .sum();
                assert!((db[o] as f64 - want_b).abs() < 1e-4, "{s:?} dbias[{o}]");
                for c in 0..s.c_in {
                    for (dt, dy_, dx) in (0..s.kt).flat_map(|a| {
                        (0..s.kh).flat_map(move |b| (0..s.kw).map(move |c| (a, b, c)))
                    }) {
                        let mut want = 0f64;
                        for b in 0..s.batch {
                            for p in 0..n {
                                let (tt, yy, xx) = (
                                    (p / (s.h * s.w)) as isize,
                                    ((p / s.w) % s.h) as isize,
                                    (p % s.w) as isize,
                                );
                                let st = tt + dt as isize - (s.kt / 2) as isize;
                                let sy = yy + dy_ as isize - (s.kh / 2) as isize;
                                let sx = xx + dx as isize - (s.kw / 2) as isize;
                                if st < 0 || st >= t || sy < 0 || sy >= h || sx < 0 || sx >= w {
                                    continue;
                                }
                                let xi = (b * s.c_in + c) * n + ((st * h + sy) * w + sx) as usize;
                                want += dy[(b * s.c_out + o) * n + p] as f64 * x[xi] as f64;
                            }
                        }
                        let wi = (((o * s.c_in + c) * s.kt + dt) * s.kh + dy_) * s.kw + dx;
                        assert!(
                            (dw[wi] as f64 - want).abs()
                                < 1e-5 * want.abs().max(1.0) * (n as f64).sqrt(),
                            "{s:?} dW[{o}, {c}, {dt}, {dy_}, {dx}]: {} vs {want}",
                            dw[wi]
                        );
                    }
                }
            }
        }
    }

    /// The gradients are the adjoints of the forward: ⟨dy, conv(x)⟩ = ⟨dx, x⟩ (no bias) and
    /// = ⟨dW, W⟩ + ⟨dbias, bias⟩, for any dy.
    #[test]
    fn gradients_are_the_forward_adjoints() {
        for s in SHAPES {
            let x = values(s.batch * s.c_in * s.n(), 4);
            let wt = values(s.c_out * s.k(), 5);
            let bias = values(s.c_out, 6);
            let dy = values(s.batch * s.c_out * s.n(), 7);
            let zero = vec![0f32; s.c_out];
            let y0 = forward(&x, &wt, &zero, &s);
            let dx = backward_x(&wt, &dy, &s);
            let lhs = dot(&dy, &y0);
            assert!(
                (lhs - dot(&dx, &x)).abs() < 1e-4 * lhs.abs().max(1.0),
                "{s:?} dx"
            );
            let y = forward(&x, &wt, &bias, &s);
            let (dw, db) = backward_w(&x, &dy, &s);
            let rhs = dot(&dw, &wt) + dot(&db, &bias);
            let lhs = dot(&dy, &y);
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{s:?} dW: {lhs} vs {rhs}"
            );
        }
    }
}
