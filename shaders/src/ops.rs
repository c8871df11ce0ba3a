//! The backend extension: Flick's fused operations as methods of one trait that every backend
//! implements. The default bodies are the plain composition of burn's primitive operations (the
//! implementation on the CPU, and the reference the WGSL kernels are tested against); burn's
//! wgpu backend overrides the forward and backward halves with the kernels in `kernels/`
//! ([`crate::cube`]), and the autodiff backend wires the backward halves in as the gradients
//! ([`crate::autodiff`]).

#[cfg(feature = "fusion")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::ops::ConvOptions;
use burn::backend::{
    Backend, Scalar, Shape, TensorMetadata, backend_extension, tensor::FloatTensor,
};

fn sc(x: f32) -> Scalar {
    x.into()
}

/// Flick's fused operations. Shapes:
/// - attention: `q [B, H, Nq, dh]`, `k, v [B, H, Nk, dh]`, `bias [B, Nk]` (additive, per key,
///   not differentiated), `o [B, H, Nq, dh]`, `lse [B, H, Nq]` (log-sum-exp of each query's
///   scores, kept for the backward pass);
/// - adaLN: `x [B, N, d]`, `shift, scale [B, d]`, `stats [B, N, 2]` (mean, 1/std per row);
/// - pixels: `x [B, 3, T, H, W]` → `[B, T, H, W]`;
/// - convolution: `x [B, Ci, T, H, W]`, `w [Co, Ci, KT, KH, KW]` (odd sizes), `bias [Co]` →
///   `[B, Co, T, H, W]` (stride 1, zero padding that keeps the size).
// Each backend only where its feature is on: the browser's engines are built with one backend
// each (the CPU engine with `flex`, the WebGPU engine with `wgpu`), without autodiff or fusion.
#[backend_extension(
    Cube: cfg(feature = "wgpu"),
    Flex: cfg(feature = "flex"),
    Autodiff: cfg(feature = "autodiff"),
    Fusion: cfg(feature = "fusion")
)]
pub trait FusedOps: Backend {
    /// `softmax(q·kᵀ·scale + bias)·v`.
    #[fusion(dtype = q, shape = q)]
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        Self::fused_attention_fwd(q, k, v, bias, scale).0
    }

    /// [`Self::fused_attention`] with the log-sum-exp of each query's scores: `(o, lse)`.
    #[fusion(meta = attention_fwd_meta)]
    fn fused_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention_fwd_reference::<Self>(q, k, v, bias, scale)
    }

    /// Gradients `(dq, dk, dv)` of [`Self::fused_attention`] given the output's gradient `dout`.
    #[fusion(meta = attention_bwd_meta)]
    #[allow(clippy::too_many_arguments)]
    fn fused_attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_bwd_reference::<Self>(q, k, v, bias, o, lse, dout, scale)
    }

    /// adaLN: `layer_norm(x)·(1 + scale) + shift` (layer norm without affine parameters over the
    /// last axis, `1/sqrt(var + eps)`; shift and scale per sample).
    #[fusion(dtype = x, shape = x)]
    fn fused_adaln(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        Self::fused_adaln_fwd(x, shift, scale, eps).0
    }

    /// [`Self::fused_adaln`] with each row's `(mean, 1/std)`: `(y, stats)`.
    #[fusion(meta = adaln_fwd_meta)]
    fn fused_adaln_fwd(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        adaln_fwd_reference::<Self>(x, shift, scale, eps)
    }

    /// Gradients `(dx, dshift, dscale)` of [`Self::fused_adaln`] given the output's gradient.
    #[fusion(meta = adaln_bwd_meta)]
    fn fused_adaln_bwd(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adaln_bwd_reference::<Self>(x, scale, stats, dy)
    }

    /// 3-D convolution, stride 1, zero padding `(KT/2, KH/2, KW/2)` (the output keeps the
    /// input's size), one group.
    #[fusion(meta = conv_fwd_meta)]
    fn fused_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::fused_conv3d_fwd(x, w, bias)
    }

    /// The forward half of [`Self::fused_conv3d`] (what the autodiff backend runs).
    #[fusion(meta = conv_fwd_meta)]
    fn fused_conv3d_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv3d_fwd_reference::<Self>(x, w, bias)
    }

    /// The input gradient of [`Self::fused_conv3d`] given the output's gradient `dy` (`x` for
    /// its shape).
    #[fusion(meta = conv_bwd_x_meta)]
    fn fused_conv3d_bwd_x(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv3d_bwd_x_reference::<Self>(x, w, dy)
    }

    /// The weight and bias gradients `(dw, dbias)` of [`Self::fused_conv3d`].
    #[fusion(meta = conv_bwd_w_meta)]
    fn fused_conv3d_bwd_w(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        conv3d_bwd_w_reference::<Self>(x, w, dy)
    }

    /// Each row of `x [R, S]` normalised without affine parameters: `(x − mean)·rstd`,
    /// `rstd = 1/sqrt(var + eps)` (the group norm on `[B·G, S]`).
    #[fusion(dtype = x, shape = x)]
    fn fused_row_norm(x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        Self::fused_row_norm_fwd(x, eps).0
    }

    /// [`Self::fused_row_norm`] with each row's `(mean, rstd)`: `(y, stats [R, 2])`.
    #[fusion(meta = row_norm_fwd_meta)]
    fn fused_row_norm_fwd(
        x: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        row_norm_fwd_reference::<Self>(x, eps)
    }

    /// The gradient of [`Self::fused_row_norm`] given the output's gradient `dy`.
    #[fusion(dtype = x, shape = x)]
    fn fused_row_norm_bwd(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        row_norm_bwd_reference::<Self>(x, stats, dy)
    }

    /// GELU `x·Φ(x)`, `Φ` the standard normal CDF (the exact form, not the tanh approximation).
    #[fusion(dtype = x, shape = x)]
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_reference::<Self>(x)
    }

    /// The gradient of [`Self::fused_gelu`] at `x` given the output's gradient `dy`:
    /// `dy·(Φ(x) + x·φ(x))`.
    #[fusion(dtype = x, shape = x)]
    fn fused_gelu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_bwd_reference::<Self>(x, dy)
    }

    /// SiLU `x·σ(x)`, `σ` the logistic sigmoid.
    #[fusion(dtype = x, shape = x)]
    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_reference::<Self>(x)
    }

    /// The gradient of [`Self::fused_silu`] at `x` given the output's gradient `dy`:
    /// `dy·σ(x)·(1 + x·(1 − σ(x)))`.
    #[fusion(dtype = x, shape = x)]
    fn fused_silu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_bwd_reference::<Self>(x, dy)
    }

    /// Row `row` of `table` (`[rows·SUMSQ_SLOTS]`) replaced by [`SUMSQ_SLOTS`] partial sums of
    /// `x²` that add up to `Σx²` over all of `x` (any shape); the other rows as they were. The
    /// optimizer's global gradient norm: one operation per parameter into one table, summed
    /// once. (The kernel writes one partial sum per workgroup; this composition writes the
    /// whole sum into the row's first slot and zeros into the rest.) Not differentiable.
    #[fusion(dtype = table, shape = table)]
    fn fused_sumsq(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        row: usize,
    ) -> FloatTensor<Self> {
        sumsq_reference::<Self>(x, table, row)
    }

    /// One AdamW step and the EMA of the new weights over one parameter: `w, a` (weights,
    /// average) of the parameter's shape, `g, m, v` (gradient, moments) of any shape with as
    /// many elements (the optimizer keeps them flat) → the new weights, first and second moments
    /// and average, each of its input's shape. `s` `[4]` holds the values a step computes on the device from its
    /// gradient norm: the clip factor, whether the step is taken (1, or 0 to return `w, m, v, a`
    /// unchanged) and the bias corrections `c₁, c₂ = 1 − βᵗ`; `decay` is the EMA's. Not
    /// differentiable (an optimizer step).
    #[fusion(meta = adamw_meta)]
    #[allow(clippy::too_many_arguments)]
    fn fused_adamw(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        s: FloatTensor<Self>,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        lr: f32,
        decay: f32,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        adamw_reference::<Self>(
            w,
            g,
            m,
            v,
            a,
            s,
            [beta1, beta2, eps, weight_decay, lr, decay],
        )
    }

    /// Clips in [-1, 1] → each pixel's clamped, rounded bytes packed as `r + 256·g + 65536·b`
    /// (exact in f32): `[B, 3, T, H, W] → [B, T, H, W]`. Not differentiable (for display).
    #[fusion(meta = pixels_meta)]
    fn clip_pixels(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pixels_reference::<Self>(x)
    }
}

#[cfg(feature = "fusion")]
fn row_norm_fwd_meta(x: &TensorSpec, _eps: &f32) -> (TensorSpec, TensorSpec) {
    (
        x.clone(),
        TensorSpec::new(Shape::new([x.shape[0], 2]), x.dtype),
    )
}

#[cfg(feature = "fusion")]
fn attention_fwd_meta(
    q: &TensorSpec,
    _k: &TensorSpec,
    _v: &TensorSpec,
    _bias: &TensorSpec,
    _scale: &f32,
) -> (TensorSpec, TensorSpec) {
    let s = &q.shape;
    (
        q.clone(),
        TensorSpec::new(Shape::new([s[0], s[1], s[2]]), q.dtype),
    )
}

#[allow(clippy::too_many_arguments)]
#[cfg(feature = "fusion")]
fn attention_bwd_meta(
    q: &TensorSpec,
    k: &TensorSpec,
    v: &TensorSpec,
    _b: &TensorSpec,
    _o: &TensorSpec,
    _l: &TensorSpec,
    _d: &TensorSpec,
    _s: &f32,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (q.clone(), k.clone(), v.clone())
}

#[cfg(feature = "fusion")]
fn adaln_fwd_meta(
    x: &TensorSpec,
    _shift: &TensorSpec,
    _scale: &TensorSpec,
    _eps: &f32,
) -> (TensorSpec, TensorSpec) {
    let s = &x.shape;
    (
        x.clone(),
        TensorSpec::new(Shape::new([s[0], s[1], 2]), x.dtype),
    )
}

#[cfg(feature = "fusion")]
fn adaln_bwd_meta(
    x: &TensorSpec,
    scale: &TensorSpec,
    _stats: &TensorSpec,
    _dy: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), scale.clone(), scale.clone())
}

#[cfg(feature = "fusion")]
fn conv_fwd_meta(x: &TensorSpec, w: &TensorSpec, _bias: &TensorSpec) -> TensorSpec {
    let (s, co) = (&x.shape, w.shape[0]);
    TensorSpec::new(Shape::new([s[0], co, s[2], s[3], s[4]]), x.dtype)
}

#[cfg(feature = "fusion")]
fn conv_bwd_x_meta(x: &TensorSpec, _w: &TensorSpec, _dy: &TensorSpec) -> TensorSpec {
    x.clone()
}

#[cfg(feature = "fusion")]
fn conv_bwd_w_meta(_x: &TensorSpec, w: &TensorSpec, _dy: &TensorSpec) -> (TensorSpec, TensorSpec) {
    (
        w.clone(),
        TensorSpec::new(Shape::new([w.shape[0]]), w.dtype),
    )
}

#[allow(clippy::too_many_arguments)]
#[cfg(feature = "fusion")]
fn adamw_meta(
    w: &TensorSpec,
    _g: &TensorSpec,
    m: &TensorSpec,
    _v: &TensorSpec,
    _a: &TensorSpec,
    _s: &TensorSpec,
    _beta1: &f32,
    _beta2: &f32,
    _eps: &f32,
    _weight_decay: &f32,
    _lr: &f32,
    _decay: &f32,
) -> (TensorSpec, TensorSpec, TensorSpec, TensorSpec) {
    (w.clone(), m.clone(), m.clone(), w.clone())
}

/// Columns of the table of [`FusedOps::fused_sumsq`]: partial sums per parameter (workgroups of
/// its kernel).
pub const SUMSQ_SLOTS: usize = 64;

/// [`FusedOps::fused_sumsq`] composed of burn's operations: `Σx²` into the row's first slot,
/// zeros into the rest.
pub fn sumsq_reference<B: Backend>(
    x: FloatTensor<B>,
    table: FloatTensor<B>,
    row: usize,
) -> FloatTensor<B> {
    let n = x.shape().num_elements();
    let flat = B::float_reshape(x, Shape::new([n]));
    let total = B::float_sum(B::float_mul(flat.clone(), flat));
    let dtype: burn::backend::FloatDType = table.dtype().into();
    let rest = B::float_zeros(Shape::new([SUMSQ_SLOTS - 1]), &total.device(), dtype);
    let values = B::float_cat(vec![B::float_reshape(total, Shape::new([1])), rest], 0);
    let at = row * SUMSQ_SLOTS;
    B::float_slice_assign(
        table,
        &[burn::backend::Slice::from(at..at + SUMSQ_SLOTS)],
        values,
    )
}

/// [`FusedOps::fused_adamw`] composed of burn's operations (`s` = clip factor, taken, c₁, c₂ on
/// the device; `h` = β₁, β₂, ε, wd, lr, EMA decay), in the kernel's order of operations. A step
/// not taken selects the old values (a select, not arithmetic: its candidates may be NaN).
pub fn adamw_reference<B: Backend>(
    w: FloatTensor<B>,
    g: FloatTensor<B>,
    m: FloatTensor<B>,
    v: FloatTensor<B>,
    a: FloatTensor<B>,
    s: FloatTensor<B>,
    h: [f32; 6],
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let [b1, b2, eps, wd, lr, d] = h;
    // Flat, whatever the shapes (as the kernel sees them); the results back in their inputs'.
    let (w_shape, m_shape) = (w.shape(), m.shape());
    let n = w_shape.num_elements();
    let flat = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([n]));
    let [w, g, m, v, a] = [w, g, m, v, a].map(flat);
    // s[i] broadcast over the parameter's n elements.
    let at = |i: usize| {
        B::float_expand(
            B::float_slice(s.clone(), &[burn::backend::Slice::from(i..i + 1)]),
            Shape::new([n]),
        )
    };
    let (scale, taken, c1, c2) = (at(0), at(1), at(2), at(3));
    let (w0, m0, v0, a0) = (w.clone(), m.clone(), v.clone(), a.clone());
    let g = B::float_mul(g, scale);
    let m = B::float_add(
        B::float_mul_scalar(m, sc(b1)),
        B::float_mul_scalar(g.clone(), sc(1.0 - b1)),
    );
    let v = B::float_add(
        B::float_mul_scalar(v, sc(b2)),
        B::float_mul_scalar(B::float_mul(g.clone(), g), sc(1.0 - b2)),
    );
    let update = B::float_div(
        B::float_div(m.clone(), c1),
        B::float_add_scalar(B::float_sqrt(B::float_div(v.clone(), c2)), sc(eps)),
    );
    let w = B::float_sub(
        w.clone(),
        B::float_mul_scalar(B::float_add(update, B::float_mul_scalar(w, sc(wd))), sc(lr)),
    );
    let a = B::float_add(
        B::float_mul_scalar(a, sc(d)),
        B::float_mul_scalar(w.clone(), sc(1.0 - d)),
    );
    let bool_dtype = burn::backend::DeviceOps::defaults(&w0.device()).bool_dtype;
    let skip = B::float_equal_elem(taken, sc(0.0), bool_dtype);
    let keep =
        |old: FloatTensor<B>, new: FloatTensor<B>| B::float_mask_where(new, skip.clone(), old);
    let shaped = |t: FloatTensor<B>, s: &Shape| B::float_reshape(t, s.clone());
    (
        shaped(keep(w0, w), &w_shape),
        shaped(keep(m0, m), &m_shape),
        shaped(keep(v0, v), &m_shape),
        shaped(keep(a0, a), &w_shape),
    )
}

#[cfg(feature = "fusion")]
fn pixels_meta(x: &TensorSpec) -> TensorSpec {
    let s = &x.shape;
    TensorSpec::new(Shape::new([s[0], s[2], s[3], s[4]]), x.dtype)
}

/// `[B, Nk]` key bias → `[B, H, Nq, Nk]`.
fn expand_bias<B: Backend>(bias: FloatTensor<B>, h: usize, nq: usize) -> FloatTensor<B> {
    let [b, nk] = bias.shape().dims();
    B::float_expand(
        B::float_reshape(bias, Shape::new([b, 1, 1, nk])),
        Shape::new([b, h, nq, nk]),
    )
}

/// Scores `q·kᵀ·scale + bias`: `[B, H, Nq, Nk]`.
fn scores<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let [_, h, nq, _] = q.shape().dims();
    let s = B::float_mul_scalar(B::float_matmul(q, B::float_swap_dims(k, 2, 3)), sc(scale));
    B::float_add(s, expand_bias::<B>(bias, h, nq))
}

/// The composed attention forward (the reference): scores, a max-shifted softmax, the product.
pub fn attention_fwd_reference<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [b, h, nq, _] = q.shape().dims();
    let nk = k.shape()[2];
    let s = scores::<B>(q, k, bias, scale);
    let m = B::float_max_dim(s.clone(), 3); // [B, H, Nq, 1]
    let e = B::float_exp(B::float_sub(
        s,
        B::float_expand(m.clone(), Shape::new([b, h, nq, nk])),
    ));
    let l = B::float_sum_dim(e.clone(), 3);
    let p = B::float_div(e, B::float_expand(l.clone(), Shape::new([b, h, nq, nk])));
    let o = B::float_matmul(p, v);
    let lse = B::float_reshape(B::float_add(m, B::float_log(l)), Shape::new([b, h, nq]));
    (o, lse)
}

/// The composed attention backward (the reference), from the forward's log-sum-exp:
/// `p = exp(s − lse)`, `dv = pᵀ·do`, `ds = p∘(do·vᵀ − rowsum(do∘o))`, `dq = ds·k·scale`,
/// `dk = dsᵀ·q·scale`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_reference<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, h, nq, _] = q.shape().dims();
    let nk = k.shape()[2];
    let full = Shape::new([b, h, nq, nk]);
    let s = scores::<B>(q.clone(), k.clone(), bias, scale);
    let lse = B::float_expand(
        B::float_reshape(lse, Shape::new([b, h, nq, 1])),
        full.clone(),
    );
    let p = B::float_exp(B::float_sub(s, lse));
    let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), dout.clone());
    let dp = B::float_matmul(dout.clone(), B::float_swap_dims(v, 2, 3));
    let d = B::float_sum_dim(B::float_mul(dout, o), 3); // [B, H, Nq, 1]
    let ds = B::float_mul(p, B::float_sub(dp, B::float_expand(d, full)));
    let dq = B::float_mul_scalar(B::float_matmul(ds.clone(), k), sc(scale));
    let dk = B::float_mul_scalar(B::float_matmul(B::float_swap_dims(ds, 2, 3), q), sc(scale));
    (dq, dk, dv)
}

/// `[B, d] → [B, N, d]`.
fn per_sample<B: Backend>(t: FloatTensor<B>, n: usize) -> FloatTensor<B> {
    let [b, d] = t.shape().dims();
    B::float_expand(
        B::float_reshape(t, Shape::new([b, 1, d])),
        Shape::new([b, n, d]),
    )
}

/// The composed adaLN forward (the reference).
pub fn adaln_fwd_reference<B: Backend>(
    x: FloatTensor<B>,
    shift: FloatTensor<B>,
    scale: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [b, n, d] = x.shape().dims();
    let full = Shape::new([b, n, d]);
    let mean = B::float_mean_dim(x.clone(), 2); // [B, N, 1]
    let c = B::float_sub(x, B::float_expand(mean.clone(), full.clone()));
    let var = B::float_mean_dim(B::float_mul(c.clone(), c.clone()), 2);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, sc(eps))));
    let xh = B::float_mul(c, B::float_expand(rstd.clone(), full));
    let y = B::float_add(
        B::float_mul(xh, B::float_add_scalar(per_sample::<B>(scale, n), sc(1.0))),
        per_sample::<B>(shift, n),
    );
    (y, B::float_cat(vec![mean, rstd], 2))
}

/// The composed adaLN backward (the reference): with `xh = (x − mean)·rstd` and
/// `g = dy·(1 + scale)`, `dx = rstd·(g − mean(g) − xh·mean(g·xh))`, `dscale = Σ_N dy·xh`,
/// `dshift = Σ_N dy`.
pub fn adaln_bwd_reference<B: Backend>(
    x: FloatTensor<B>,
    scale: FloatTensor<B>,
    stats: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, n, d] = x.shape().dims();
    let full = Shape::new([b, n, d]);
    let mean = B::float_slice(
        stats.clone(),
        &[(0..b).into(), (0..n).into(), (0..1).into()],
    );
    let rstd = B::float_expand(
        B::float_slice(stats, &[(0..b).into(), (0..n).into(), (1..2).into()]),
        full.clone(),
    );
    let xh = B::float_mul(
        B::float_sub(x, B::float_expand(mean, full.clone())),
        rstd.clone(),
    );
    let g = B::float_mul(
        dy.clone(),
        B::float_add_scalar(per_sample::<B>(scale, n), sc(1.0)),
    );
    let mg = B::float_expand(B::float_mean_dim(g.clone(), 2), full.clone());
    let mgx = B::float_expand(
        B::float_mean_dim(B::float_mul(g.clone(), xh.clone()), 2),
        full,
    );
    let dx = B::float_mul(
        rstd,
        B::float_sub(B::float_sub(g, mg), B::float_mul(xh.clone(), mgx)),
    );
    let dscale = B::float_reshape(
        B::float_sum_dim(B::float_mul(dy.clone(), xh), 1),
        Shape::new([b, d]),
    );
    let dshift = B::float_reshape(B::float_sum_dim(dy, 1), Shape::new([b, d]));
    (dx, dshift, dscale)
}

/// The composed pixel packing (the reference).
pub fn pixels_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let [b, _, t, h, w] = x.shape().dims();
    let bytes = B::float_floor(B::float_add_scalar(
        B::float_mul_scalar(
            B::float_add_scalar(B::float_clamp(x, sc(-1.0), sc(1.0)), sc(1.0)),
            sc(127.5),
        ),
        sc(0.5),
    ));
    let channel = |c: usize| {
        B::float_slice(
            bytes.clone(),
            &[
                (0..b).into(),
                (c..c + 1).into(),
                (0..t).into(),
                (0..h).into(),
                (0..w).into(),
            ],
        )
    };
    let packed = B::float_add(
        B::float_add(channel(0), B::float_mul_scalar(channel(1), sc(256.0))),
        B::float_mul_scalar(channel(2), sc(65536.0)),
    );
    B::float_reshape(packed, Shape::new([b, t, h, w]))
}

/// Stride 1, zero padding `(KT/2, KH/2, KW/2)`, no dilation, one group, for weights `w`.
pub(crate) fn conv_options(w: &Shape) -> ConvOptions<3> {
    ConvOptions::new([1, 1, 1], [w[2] / 2, w[3] / 2, w[4] / 2], [1, 1, 1], 1)
}

/// The composed row normalisation (the reference): `(x − mean)·rstd` per row of `x [R, S]`,
/// with `stats [R, 2] = (mean, rstd)`.
pub fn row_norm_fwd_reference<B: Backend>(
    x: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let full = x.shape();
    let mean = B::float_mean_dim(x.clone(), 1); // [R, 1]
    let c = B::float_sub(x, B::float_expand(mean.clone(), full.clone()));
    let var = B::float_mean_dim(B::float_mul(c.clone(), c.clone()), 1);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, sc(eps))));
    let y = B::float_mul(c, B::float_expand(rstd.clone(), full));
    (y, B::float_cat(vec![mean, rstd], 1))
}

/// The composed row normalisation gradient: with `xh = (x − mean)·rstd`,
/// `dx = rstd·(dy − mean(dy) − xh·mean(dy·xh))` per row.
pub fn row_norm_bwd_reference<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let full = x.shape();
    let r = full[0];
    let mean = B::float_slice(stats.clone(), &[(0..r).into(), (0..1).into()]);
    let rstd = B::float_expand(
        B::float_slice(stats, &[(0..r).into(), (1..2).into()]),
        full.clone(),
    );
    let xh = B::float_mul(
        B::float_sub(x, B::float_expand(mean, full.clone())),
        rstd.clone(),
    );
    let mg = B::float_expand(B::float_mean_dim(dy.clone(), 1), full.clone());
    let mgx = B::float_expand(
        B::float_mean_dim(B::float_mul(dy.clone(), xh.clone()), 1),
        full,
    );
    B::float_mul(
        rstd,
        B::float_sub(B::float_sub(dy, mg), B::float_mul(xh, mgx)),
    )
}

/// The composed GELU (the reference): `x·(1 + erf(x/√2))/2` from burn's primitives.
pub fn gelu_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let erf = B::float_erf(B::float_div_scalar(x.clone(), sc(std::f32::consts::SQRT_2)));
    let cdf = B::float_mul_scalar(B::float_add_scalar(erf, sc(1.0)), sc(0.5));
    B::float_mul(x, cdf)
}

/// The composed GELU gradient: `dy·(Φ(x) + x·e^(−x²/2)/√(2π))`, exactly the forward's slope
/// (burn's default `gelu_backward` is the slope of the tanh approximation).
pub fn gelu_bwd_reference<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let erf = B::float_erf(B::float_div_scalar(x.clone(), sc(std::f32::consts::SQRT_2)));
    let cdf = B::float_mul_scalar(B::float_add_scalar(erf, sc(1.0)), sc(0.5));
    let sq = B::float_mul(x.clone(), x.clone());
    let pdf = B::float_mul_scalar(
        B::float_exp(B::float_mul_scalar(sq, sc(-0.5))),
        sc(1.0 / (2.0 * std::f32::consts::PI).sqrt()),
    );
    let slope = B::float_add(cdf, B::float_mul(x, pdf));
    B::float_mul(dy, slope)
}

/// The composed SiLU (the reference): `x·σ(x)` from burn's primitives.
pub fn silu_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// The composed SiLU gradient: `dy·σ(x)·(1 + x·(1 − σ(x)))`.
pub fn silu_bwd_reference<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), sc(1.0));
    let slope = B::float_mul(s, B::float_add_scalar(B::float_mul(x, one_minus), sc(1.0)));
    B::float_mul(dy, slope)
}

/// The composed convolution (the reference): burn's own `conv3d`.
pub fn conv3d_fwd_reference<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let options = conv_options(&w.shape());
    B::conv3d(x, w, Some(bias), options)
}

/// The composed convolution input gradient (the reference): burn's own.
pub fn conv3d_bwd_x_reference<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let options = conv_options(&w.shape());
    B::conv3d_x_backward(x, w, dy, options)
}

/// The composed convolution weight and bias gradients (the reference): burn's own weight
/// gradient, the bias gradient as the sum over everything but the channel.
pub fn conv3d_bwd_w_reference<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let options = conv_options(&w.shape());
    let dw = B::conv3d_weight_backward(x, w, dy.clone(), options);
    (dw, conv_bias_grad::<B>(dy))
}

/// `Σ dy` over batch, time, height and width: `[B, Co, T, H, W] → [Co]`.
pub(crate) fn conv_bias_grad<B: Backend>(dy: FloatTensor<B>) -> FloatTensor<B> {
    let [b, co, t, h, w] = dy.shape().dims();
    let per = B::float_sum_dim(B::float_reshape(dy, Shape::new([b, co, t * h * w])), 2);
    B::float_reshape(B::float_sum_dim(per, 0), Shape::new([co]))
}

/// Whether the kernels handle this dtype (they are written for f32).
#[cfg(feature = "wgpu")]
pub(crate) fn is_f32(dtype: burn::backend::DType) -> bool {
    matches!(dtype, burn::backend::DType::F32)
}

/// burn's CPU backend: the composed reference (the default bodies), except the convolution,
/// which runs as im2col and matrix products over the tensors' memory ([`crate::conv_cpu`]) where
/// it is f32 and the kernel odd, the attention, per head over the tensors' memory
/// ([`crate::attention_cpu`]) where it is f32, and the GELU and SiLU, vectorised ([`crate::activation_cpu`]).
#[cfg(feature = "flex")]
use crate::activation_cpu::Activation;

#[cfg(feature = "flex")]
impl FusedOps for burn::backend::Flex {
    fn fused_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let Some(s) = flex_conv::attn_shape(&q, &k, &v, &bias) else {
            return attention_fwd_reference::<Self>(q, k, v, bias, scale);
        };
        let f = flex_conv::f32s;
        let (o, lse) = crate::attention_cpu::forward(&f(&q), &f(&k), &f(&v), &f(&bias), &s, scale);
        (
            flex_conv::tensor(o, [s.batch, s.heads, s.nq, s.dh]),
            flex_conv::tensor(lse, [s.batch, s.heads, s.nq]),
        )
    }

    fn fused_attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let same = |t: &FloatTensor<Self>, like: &FloatTensor<Self>| {
            t.dtype() == burn::backend::DType::F32 && t.shape() == like.shape()
        };
        let lse_ok = lse.dtype() == burn::backend::DType::F32
            && lse.shape().num_elements() == q.shape().num_elements() / q.shape()[3].max(1);
        let shape = flex_conv::attn_shape(&q, &k, &v, &bias)
            .filter(|_| same(&o, &q) && same(&dout, &q) && lse_ok);
        let Some(s) = shape else {
            return attention_bwd_reference::<Self>(q, k, v, bias, o, lse, dout, scale);
        };
        let f = flex_conv::f32s;
        let (dq, dk, dv) = crate::attention_cpu::backward(
            &f(&q),
            &f(&k),
            &f(&v),
            &f(&bias),
            &f(&o),
            &f(&lse),
            &f(&dout),
            &s,
            scale,
        );
        (
            flex_conv::tensor(dq, [s.batch, s.heads, s.nq, s.dh]),
            flex_conv::tensor(dk, [s.batch, s.heads, s.nk, s.dh]),
            flex_conv::tensor(dv, [s.batch, s.heads, s.nk, s.dh]),
        )
    }

    fn fused_conv3d_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let Some(s) = flex_conv::shape(&x, &w, Some(&bias)) else {
            return conv3d_fwd_reference::<Self>(x, w, bias);
        };
        let (x, w, bias) = (
            flex_conv::f32s(&x),
            flex_conv::f32s(&w),
            flex_conv::f32s(&bias),
        );
        let y = crate::conv_cpu::forward(&x, &w, &bias, &s);
        flex_conv::tensor(y, [s.batch, s.c_out, s.t, s.h, s.w])
    }

    fn fused_conv3d_bwd_x(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let Some(s) = flex_conv::shape(&x, &w, None) else {
            return conv3d_bwd_x_reference::<Self>(x, w, dy);
        };
        let dx = crate::conv_cpu::backward_x(&flex_conv::f32s(&w), &flex_conv::f32s(&dy), &s);
        flex_conv::tensor(dx, [s.batch, s.c_in, s.t, s.h, s.w])
    }

    fn fused_conv3d_bwd_w(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let Some(s) = flex_conv::shape(&x, &w, None) else {
            return conv3d_bwd_w_reference::<Self>(x, w, dy);
        };
        let (dw, db) = crate::conv_cpu::backward_w(&flex_conv::f32s(&x), &flex_conv::f32s(&dy), &s);
        (
            flex_conv::tensor(dw, [s.c_out, s.c_in, s.kt, s.kh, s.kw]),
            flex_conv::tensor(db, [s.c_out]),
        )
    }

    fn fused_row_norm_fwd(
        x: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.shape();
        if x.dtype() != burn::backend::DType::F32 || shape.num_dims() != 2 || shape[0] == 0 {
            return row_norm_fwd_reference::<Self>(x, eps);
        }
        let rows = shape[0];
        let (y, stats) = crate::norm_cpu::forward(&flex_conv::f32s(&x), rows, eps);
        (
            flex_conv::tensor(y, [rows, shape[1]]),
            flex_conv::tensor(stats, [rows, 2]),
        )
    }

    fn fused_row_norm_bwd(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let f32 = |t: &FloatTensor<Self>| t.dtype() == burn::backend::DType::F32;
        let shape = x.shape();
        let fits = f32(&x)
            && f32(&stats)
            && f32(&dy)
            && shape.num_dims() == 2
            && shape[0] > 0
            && dy.shape() == shape
            && stats.shape().num_elements() == 2 * shape[0];
        if !fits {
            return row_norm_bwd_reference::<Self>(x, stats, dy);
        }
        let f = flex_conv::f32s;
        let dx = crate::norm_cpu::backward(&f(&x), &f(&stats), &f(&dy));
        flex_conv::tensor(dx, [shape[0], shape[1]])
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_conv::activation(Activation::Gelu, x, gelu_reference::<Self>)
    }

    fn fused_gelu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_conv::activation_bwd(Activation::Gelu, x, dy, gelu_bwd_reference::<Self>)
    }

    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_conv::activation(Activation::Silu, x, silu_reference::<Self>)
    }

    fn fused_silu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_conv::activation_bwd(Activation::Silu, x, dy, silu_bwd_reference::<Self>)
    }
}

/// Between burn's CPU tensors and the slices of [`crate::conv_cpu`], [`crate::attention_cpu`] and
/// [`crate::activation_cpu`].
#[cfg(feature = "flex")]
mod flex_conv {
    use std::borrow::Cow;

    use burn::backend::flex::FlexTensor;
    use burn::backend::{DType, TensorData, TensorMetadata};

    use crate::activation_cpu::Activation;
    use crate::attention_cpu::AttnShape;
    use crate::conv_cpu::ConvShape;

    /// The attention's sizes where `attention_cpu` handles it: f32 throughout, `q [B, H, Nq, dh]`,
    /// `k, v [B, H, Nk, dh]`, `bias [B, Nk]`; `None` sends it to the composed reference.
    pub fn attn_shape(
        q: &FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        bias: &FlexTensor,
    ) -> Option<AttnShape> {
        if [q, k, v, bias].iter().any(|t| t.dtype() != DType::F32) {
            return None;
        }
        let (qs, ks, bs) = (q.shape(), k.shape(), bias.shape());
        if qs.num_dims() != 4 || ks.num_dims() != 4 || bs.num_dims() != 2 || v.shape() != ks {
            return None;
        }
        let s = AttnShape {
            batch: qs[0],
            heads: qs[1],
            nq: qs[2],
            nk: ks[2],
            dh: qs[3],
        };
        let fits = ks[0] == s.batch && ks[1] == s.heads && ks[3] == s.dh;
        (fits && bs[0] == s.batch && bs[1] == s.nk).then_some(s)
    }

    /// The convolution's sizes where `conv_cpu` handles it: f32 throughout, 5-D, odd kernel,
    /// matching channels (and bias length); `None` sends it to burn's convolution.
    pub fn shape(x: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>) -> Option<ConvShape> {
        let f32 = |t: &FlexTensor| t.dtype() == DType::F32;
        if !f32(x) || !f32(w) || bias.is_some_and(|b| !f32(b)) {
            return None;
        }
        let (xs, ws) = (x.shape(), w.shape());
        if xs.num_dims() != 5 || ws.num_dims() != 5 || xs[1] != ws[1] {
            return None;
        }
        if bias.is_some_and(|b| b.shape().num_elements() != ws[0]) {
            return None;
        }
        let s = ConvShape {
            batch: xs[0],
            c_in: xs[1],
            c_out: ws[0],
            t: xs[2],
            h: xs[3],
            w: xs[4],
            kt: ws[2],
            kh: ws[3],
            kw: ws[4],
        };
        (s.kt % 2 == 1 && s.kh % 2 == 1 && s.kw % 2 == 1).then_some(s)
    }

    /// The tensor's elements in row-major order (borrowed where already laid out so).
    pub fn f32s(t: &FlexTensor) -> Cow<'_, [f32]> {
        match t.as_slice::<f32>() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(
                t.to_contiguous()
                    .as_slice::<f32>()
                    .expect("contiguous")
                    .to_vec(),
            ),
        }
    }

    pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// `act(x)` ([`crate::activation_cpu`]) where `x` is f32, otherwise `reference(x)`.
    pub fn activation(
        act: Activation,
        x: FlexTensor,
        reference: fn(FlexTensor) -> FlexTensor,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return reference(x);
        }
        let shape = x.shape();
        let y = crate::activation_cpu::forward(act, &f32s(&x));
        FlexTensor::from_data(TensorData::new(y, shape))
    }

    /// The gradient of `act` at `x` given `dy` where both are f32 of one shape, otherwise
    /// `reference(x, dy)`.
    pub fn activation_bwd(
        act: Activation,
        x: FlexTensor,
        dy: FlexTensor,
        reference: fn(FlexTensor, FlexTensor) -> FlexTensor,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 || dy.dtype() != DType::F32 || x.shape() != dy.shape() {
            return reference(x, dy);
        }
        let shape = x.shape();
        let dx = crate::activation_cpu::backward(act, &f32s(&x), &f32s(&dy));
        FlexTensor::from_data(TensorData::new(dx, shape))
    }
}
