//! burn's wgpu backend (`CubeBackend`): the WGSL kernels of `kernels/`, launched through cubecl
//! as precompiled sources. Where the device does not compile WGSL (cubecl's SPIR-V or MSL
//! compilers, the CUDA/HIP/CPU runtimes), or the dtype is not f32, or a head is wider than the
//! kernels are built for, the composed reference runs instead.

use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{Shape, TensorMetadata, ops::FloatTensorOps, tensor::FloatTensor};
use cubecl::prelude::KernelId;
use cubecl::server::KernelArguments;
use cubecl::{CubeCount, CubeDim, RuntimeId};

use crate::ops::{self, FusedOps};
use crate::template::{CONV_KT, HEAD_DIMS, KERNELS, Variant, instantiate};

/// Workgroups the weight-gradient kernel should have (it splits the positions into chunks).
const CONV_TARGET_WORKGROUPS: usize = 2048;

/// One of `kernels/*.wgsl`, instantiated with template values.
#[derive(Debug)]
struct Wgsl {
    name: &'static str,
    v: Variant,
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        let src = KERNELS
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, s)| *s)
            .expect("a kernel of kernels/");
        SourceTemplate::new(instantiate(src, self.v))
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
            .info((self.name, self.v.dh, self.v.splits, self.v.kt))
            .cube_dim(CubeDim::new_1d(WORKGROUP).0)
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Every kernel runs 64 invocations per workgroup (`@workgroup_size(64, 1, 1)`).
const WORKGROUP: u32 = 64;

/// Whether `t`'s device compiles WGSL (burn's wgpu runtime without its SPIR-V compiler: Vulkan,
/// Metal, DX12 and WebGPU alike).
fn wgsl_device(t: &CubeTensor) -> bool {
    t.device.runtime() == RuntimeId::Wgpu && t.client.name() == "wgpu<wgsl>"
}

/// A grid of `workgroups` workgroups within the 65535-per-dimension limit; kernels read their
/// linear index as `x + y·num_workgroups.x` and skip the ones past the end.
fn grid(workgroups: usize) -> CubeCount {
    let w = workgroups.max(1) as u32;
    let x = w.min(32768);
    CubeCount::Static(x, w.div_ceil(x), 1)
}

fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements() * like.dtype.size();
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(bytes),
        like.dtype,
    )
}

/// Launch kernel `name` instantiated with `v` on `workgroups` workgroups over `buffers` (in
/// binding order), the last binding being `params` as u32 words.
fn launch(
    name: &'static str,
    v: Variant,
    workgroups: usize,
    buffers: &[&CubeTensor],
    params: &[u32],
) {
    crate::LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let client = buffers[0].client.clone();
    // At least 8 words: kernels copy the first 8 into workgroup memory (bounds checks are off).
    let mut words = vec![0u32; params.len().max(8)];
    words[..params.len()].copy_from_slice(params);
    let params = client.create_from_slice(bytemuck::cast_slice(&words));
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(params.binding());
    client.launch(
        Box::new(SourceKernel::new(
            Wgsl { name, v },
            CubeDim::new_1d(WORKGROUP),
        )),
        grid(workgroups),
        KernelArguments::new().with_buffers(bindings),
    );
}

/// The attention kernels apply to f32 tensors on a WGSL device with a head width they are
/// built for.
fn attention_kernels_apply(q: &CubeTensor) -> bool {
    wgsl_device(q) && ops::is_f32(q.dtype) && HEAD_DIMS.contains(&(q.shape()[3] as u32))
}

/// Whether `t` `[B, H, N, dh]` lies in memory as `[B, N, H, dh]`, contiguous: a linear layer's
/// output split into heads by a reshape and a swap of axes 1 and 2, without a copy. The
/// attention kernels read (and write) that layout directly (`row4` in `attn_rows.wgsl`).
fn heads_interleaved(t: &CubeTensor) -> bool {
    let [_, h, n, dh] = t.shape().dims();
    let want = [n * h * dh, dh, h * dh, 1];
    let dims = t.shape();
    let strides = t.meta.strides();
    (0..4).all(|i| dims[i] == 1 || strides[i] == want[i])
}

/// An uninitialised `[B, H, N, dh]` tensor in the layout the attention kernels use: heads
/// interleaved (`[B, N, H, dh]` in memory, axes 1 and 2 swapped, no copy) or stacked.
fn heads_empty(like: &CubeTensor, [b, h, n, dh]: [usize; 4], interleaved: bool) -> CubeTensor {
    if interleaved {
        CubeBackend::float_swap_dims(empty(like, Shape::new([b, n, h, dh])), 1, 2)
    } else {
        empty(like, Shape::new([b, h, n, dh]))
    }
}

/// SiLU of contiguous `x` (`dy` `None`), or its gradient given the output's gradient `dy`: one
/// launch of `silu_fb`, out of place.
fn silu_launch(x: CubeTensor, dy: Option<CubeTensor>) -> CubeTensor {
    let n = x.shape().num_elements();
    let out = empty(&x, x.shape());
    let mode = dy.is_some() as u32;
    // The forward binds a one-element stand-in for dy: binding x twice would alias two writable
    // storage bindings, which WebGPU refuses.
    let dy = dy.unwrap_or_else(|| empty(&x, Shape::new([1])));
    launch(
        "silu_fb",
        Variant::PLAIN,
        n.div_ceil(64),
        &[&x, &dy, &out],
        &[n as u32, mode],
    );
    out
}

/// Whether `t` `[B, d]` is one contiguous row expanded over the batch (stride 0 on the batch
/// axis): its buffer holds just that row.
fn broadcast_row(t: &CubeTensor) -> bool {
    let s = t.meta.strides();
    s.len() == 2 && s[0] == 0 && s[1] == 1
}

/// Elements `start .. start + shape.num_elements()` of contiguous `t`, as a contiguous tensor of
/// `shape` over the same buffer (no copy; `start` a multiple of the binding alignment where the
/// result is bound to a kernel).
fn part(t: &CubeTensor, start: usize, shape: Shape) -> CubeTensor {
    let f = t.dtype.size() as u64;
    let len = shape.num_elements();
    let total = t.shape().num_elements();
    let handle = t
        .handle
        .clone()
        .offset_start(start as u64 * f)
        .offset_end((total - start - len) as u64 * f);
    CubeTensor::new_contiguous(t.client.clone(), t.device.clone(), shape, handle, t.dtype)
}

/// The convolution kernels apply to f32 tensors on a WGSL device with a `kt×3×3` kernel
/// (`kt` in [`CONV_KT`]).
fn conv_kernels_apply(x: &CubeTensor, w: &Shape) -> bool {
    wgsl_device(x)
        && ops::is_f32(x.dtype)
        && CONV_KT.contains(&(w[2] as u32))
        && w[3] == 3
        && w[4] == 3
}

/// `y = conv(x, w) (+ bias)` by `conv_fwd`: `x [B, Ci, T, H, W]`, `w [Co, Ci, KT, 3, 3]`.
fn conv_forward(x: &CubeTensor, w: &CubeTensor, bias: Option<&CubeTensor>) -> CubeTensor {
    let [b, ci, t, h, wd] = x.shape().dims();
    let [co, _, kt, _, _] = w.shape().dims();
    let y = empty(x, Shape::new([b, co, t, h, wd]));
    let blocks = co.div_ceil(4);
    let dims = [b, ci, co, t, h, wd].map(|v| v as u32);
    // Without a bias, a one-element stand-in (binding w twice would alias two writable storage
    // bindings, which WebGPU refuses).
    let none = bias.is_none().then(|| empty(x, Shape::new([1])));
    launch(
        "conv_fwd",
        Variant::conv(kt as u32),
        (b * blocks * t * h * wd).div_ceil(64),
        &[x, w, bias.or(none.as_ref()).expect("a bias binding"), &y],
        &[
            dims[0],
            dims[1],
            dims[2],
            dims[3],
            dims[4],
            dims[5],
            bias.is_some() as u32,
        ],
    );
    y
}

impl FusedOps for CubeBackend {
    fn fused_conv3d_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !conv_kernels_apply(&x, &w.shape()) {
            return ops::conv3d_fwd_reference::<Self>(x, w, bias);
        }
        let (x, w, bias) = (
            into_contiguous(x),
            into_contiguous(w),
            into_contiguous(bias),
        );
        conv_forward(&x, &w, Some(&bias))
    }

    fn fused_conv3d_bwd_x(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !conv_kernels_apply(&x, &w.shape()) {
            return ops::conv3d_bwd_x_reference::<Self>(x, w, dy);
        }
        // The same convolution of dy with the kernel flipped in space and time and its channel
        // axes swapped (stride 1, size-keeping padding, odd kernel).
        let flipped = into_contiguous(Self::float_flip(Self::float_swap_dims(w, 0, 1), &[2, 3, 4]));
        conv_forward(&into_contiguous(dy), &flipped, None)
    }

    fn fused_conv3d_bwd_w(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !conv_kernels_apply(&x, &w.shape()) {
            return ops::conv3d_bwd_w_reference::<Self>(x, w, dy);
        }
        let [b, ci, t, h, wd] = x.shape().dims();
        let [co, _, kt, _, _] = w.shape().dims();
        let (x, dy) = (into_contiguous(x), into_contiguous(dy));
        // Partial sums over chunks of positions, then their sum.
        let (pairs, positions) = (co * ci, b * t * h * wd);
        let chunks = CONV_TARGET_WORKGROUPS
            .div_ceil(pairs)
            .min(positions.div_ceil(1024))
            .max(1);
        let part = empty(&x, Shape::new([chunks, co, ci, kt, 3, 3]));
        let dims = [b, ci, co, t, h, wd, chunks].map(|v| v as u32);
        launch(
            "conv_bwd_w",
            Variant::conv(kt as u32),
            chunks * pairs,
            &[&x, &dy, &part],
            &dims,
        );
        let dw = Self::float_reshape(Self::float_sum_dim(part, 0), Shape::new([co, ci, kt, 3, 3]));
        (dw, ops::conv_bias_grad::<Self>(dy))
    }

    fn fused_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !attention_kernels_apply(&q) {
            return ops::attention_fwd_reference::<Self>(q, k, v, bias, scale);
        }
        let [b, h, nq, dh] = q.shape().dims();
        let nk = k.shape()[2];
        // Heads interleaved where q, k and v all come so (no copies in, none out); else stacked.
        let il = [&q, &k, &v].iter().all(|t| heads_interleaved(t));
        crate::INTERLEAVED.fetch_add(il as usize, std::sync::atomic::Ordering::Relaxed);
        let stack = |t: CubeTensor| if il { t } else { into_contiguous(t) };
        let (q, k, v, bias) = (stack(q), stack(k), stack(v), into_contiguous(bias));
        let o = heads_empty(&q, [b, h, nq, dh], il);
        let lse = empty(&q, Shape::new([b, h, nq]));
        let s = crate::attention_splits(dh as u32, b * h, nq);
        let qtiles = nq.div_ceil(64 / s as usize);
        launch(
            "attn_fwd",
            Variant::attention(dh as u32, s),
            b * h * qtiles,
            &[&q, &k, &v, &bias, &o, &lse],
            &[
                (b * h) as u32,
                h as u32,
                nq as u32,
                nk as u32,
                scale.to_bits(),
                qtiles as u32,
                il as u32,
            ],
        );
        (o, lse)
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
        if !attention_kernels_apply(&q) {
            return ops::attention_bwd_reference::<Self>(q, k, v, bias, o, lse, dout, scale);
        }
        let [b, h, nq, dh] = q.shape().dims();
        let nk = k.shape()[2];
        // Heads interleaved where every operand comes so (see the forward); else stacked.
        let il = [&q, &k, &v, &o, &dout].iter().all(|t| heads_interleaved(t));
        crate::INTERLEAVED.fetch_add(il as usize, std::sync::atomic::Ordering::Relaxed);
        let stack = |t: CubeTensor| if il { t } else { into_contiguous(t) };
        let (q, k, v, o, dout) = (stack(q), stack(k), stack(v), stack(o), stack(dout));
        let (bias, lse) = (into_contiguous(bias), into_contiguous(lse));
        // ld = [lse, D], D_i = do_i·o_i: one buffer, to stay within WebGPU's 8 storage buffers
        // per kernel.
        let rows = b * h * nq;
        let ld = empty(&q, Shape::new([2 * rows]));
        launch(
            "attn_bwd_prep",
            Variant::attention(dh as u32, 1),
            rows.div_ceil(64),
            &[&lse, &o, &dout, &ld],
            &[(b * h) as u32, h as u32, nq as u32, 0, 0, 0, il as u32],
        );
        // dk then dv in one buffer, dv from an offset a storage binding may start at, each half
        // in the layout of the inputs; handed out as views (no copies).
        let half_len = b * h * nk * dh;
        let align = (q.client.properties().memory.alignment as usize / 4).max(4);
        let dv_at = half_len.div_ceil(align) * align;
        let params = |tiles: usize| {
            [
                (b * h) as u32,
                h as u32,
                nq as u32,
                nk as u32,
                scale.to_bits(),
                tiles as u32,
                il as u32,
                dv_at as u32,
            ]
        };
        let dq = heads_empty(&q, [b, h, nq, dh], il);
        let s = crate::attention_splits(dh as u32, b * h, nq);
        let qtiles = nq.div_ceil(64 / s as usize);
        launch(
            "attn_bwd_dq",
            Variant::attention(dh as u32, s),
            b * h * qtiles,
            &[&q, &k, &v, &bias, &dout, &ld, &dq],
            &params(qtiles),
        );
        let dkv = empty(&q, Shape::new([dv_at + half_len]));
        let s = crate::attention_splits(dh as u32, b * h, nk);
        let ktiles = nk.div_ceil(64 / s as usize);
        launch(
            "attn_bwd_dkdv",
            Variant::attention(dh as u32, s),
            b * h * ktiles,
            &[&q, &k, &v, &bias, &dout, &ld, &dkv],
            &params(ktiles),
        );
        let half = |i: usize| {
            if il {
                Self::float_swap_dims(part(&dkv, i * dv_at, Shape::new([b, nk, h, dh])), 1, 2)
            } else {
                part(&dkv, i * dv_at, Shape::new([b, h, nk, dh]))
            }
        };
        (dq, half(0), half(1))
    }

    fn fused_adaln_fwd(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::adaln_fwd_reference::<Self>(x, shift, scale, eps);
        }
        let [b, n, d] = x.shape().dims();
        // A learned layer norm's scale and shift come as one row expanded over the batch: read
        // that row for every sample instead of copying it out per sample.
        let shared = broadcast_row(&shift) && broadcast_row(&scale);
        let per_sample = |t: CubeTensor| if shared { t } else { into_contiguous(t) };
        let (x, shift, scale) = (into_contiguous(x), per_sample(shift), per_sample(scale));
        let y = empty(&x, Shape::new([b, n, d]));
        let stats = empty(&x, Shape::new([b, n, 2]));
        launch(
            "adaln_fwd",
            Variant::PLAIN,
            b * n,
            &[&x, &shift, &scale, &y, &stats],
            &[
                (b * n) as u32,
                n as u32,
                d as u32,
                eps.to_bits(),
                shared as u32,
            ],
        );
        (y, stats)
    }

    fn fused_adaln_bwd(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::adaln_bwd_reference::<Self>(x, scale, stats, dy);
        }
        let [b, n, d] = x.shape().dims();
        let shared = broadcast_row(&scale);
        let scale = if shared {
            scale
        } else {
            into_contiguous(scale)
        };
        let (x, stats, dy) = (
            into_contiguous(x),
            into_contiguous(stats),
            into_contiguous(dy),
        );
        let dx = empty(&x, Shape::new([b, n, d]));
        launch(
            "adaln_bwd_dx",
            Variant::PLAIN,
            b * n,
            &[&x, &scale, &stats, &dy, &dx],
            &[(b * n) as u32, n as u32, d as u32, shared as u32],
        );
        let dshift = empty(&x, Shape::new([b, d]));
        let dscale = empty(&x, Shape::new([b, d]));
        launch(
            "adaln_bwd_mod",
            Variant::PLAIN,
            (b * d).div_ceil(64),
            &[&x, &stats, &dy, &dshift, &dscale],
            &[b as u32, n as u32, d as u32],
        );
        (dx, dshift, dscale)
    }

    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::silu_reference::<Self>(x);
        }
        silu_launch(into_contiguous(x), None)
    }

    fn fused_silu_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::silu_bwd_reference::<Self>(x, dy);
        }
        silu_launch(into_contiguous(x), Some(into_contiguous(dy)))
    }

    fn fused_row_norm_fwd(
        x: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::row_norm_fwd_reference::<Self>(x, eps);
        }
        let [rows, s] = x.shape().dims();
        let x = into_contiguous(x);
        let y = empty(&x, Shape::new([rows, s]));
        let stats = empty(&x, Shape::new([rows, 2]));
        launch(
            "row_norm_fwd",
            Variant::PLAIN,
            rows,
            &[&x, &y, &stats],
            &[rows as u32, s as u32, eps.to_bits()],
        );
        (y, stats)
    }

    fn fused_row_norm_bwd(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::row_norm_bwd_reference::<Self>(x, stats, dy);
        }
        let [rows, s] = x.shape().dims();
        let (x, stats, dy) = (
            into_contiguous(x),
            into_contiguous(stats),
            into_contiguous(dy),
        );
        let dx = empty(&x, Shape::new([rows, s]));
        launch(
            "row_norm_bwd",
            Variant::PLAIN,
            rows,
            &[&x, &stats, &dy, &dx],
            &[rows as u32, s as u32],
        );
        dx
    }

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
        let h = [beta1, beta2, eps, weight_decay, lr, decay];
        let all_f32 = [&w, &g, &m, &v, &a, &s]
            .iter()
            .all(|t| ops::is_f32(t.dtype));
        if !(wgsl_device(&w) && all_f32) {
            return ops::adamw_reference::<Self>(w, g, m, v, a, s, h);
        }
        let n = w.shape().num_elements();
        let (w_shape, m_shape) = (w.shape(), m.shape());
        let [w, g, m, v, a, s] = [w, g, m, v, a, s].map(into_contiguous);
        // One buffer for the four results, each row starting at an offset a storage binding
        // may start at, handed out as four tensors (views, no copies): fewer operations for
        // the host to queue per parameter than four slices of one [4, n] tensor.
        let align = (w.client.properties().memory.alignment as usize / 4).max(1);
        let stride = n.div_ceil(align) * align;
        let out = empty(&w, Shape::new([4 * stride]));
        let mut params = vec![n as u32];
        params.extend(h.iter().map(|x| x.to_bits()));
        params.push(stride as u32);
        launch(
            "adamw",
            Variant::PLAIN,
            n.div_ceil(64),
            &[&w, &g, &m, &v, &a, &s, &out],
            &params,
        );
        let row = |i: usize, shape: &Shape| {
            let f = w.dtype.size() as u64;
            let handle = out
                .handle
                .clone()
                .offset_start(i as u64 * stride as u64 * f)
                .offset_end(((3 - i) * stride + stride - n) as u64 * f);
            CubeTensor::new_contiguous(
                out.client.clone(),
                out.device.clone(),
                shape.clone(),
                handle,
                out.dtype,
            )
        };
        (
            row(0, &w_shape),
            row(1, &m_shape),
            row(2, &m_shape),
            row(3, &w_shape),
        )
    }

    fn fused_sumsq(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        row: usize,
    ) -> FloatTensor<Self> {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype) && ops::is_f32(table.dtype)) {
            return ops::sumsq_reference::<Self>(x, table, row);
        }
        let x = into_contiguous(x);
        let table = into_contiguous(table);
        // In place where nothing else holds the table (each parameter's launch writes its own
        // row of the one table a step builds).
        let table = if table.can_mut() { table } else { table.copy() };
        let n = x.shape().num_elements();
        launch(
            "sumsq",
            Variant::PLAIN,
            ops::SUMSQ_SLOTS,
            &[&x, &table],
            &[n as u32, row as u32, ops::SUMSQ_SLOTS as u32],
        );
        table
    }

    fn clip_pixels(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !(wgsl_device(&x) && ops::is_f32(x.dtype)) {
            return ops::pixels_reference::<Self>(x);
        }
        let [b, _, t, h, w] = x.shape().dims();
        let x = into_contiguous(x);
        let out = empty(&x, Shape::new([b, t, h, w]));
        let pixels = t * h * w;
        launch(
            "clip_pixels",
            Variant::PLAIN,
            (b * pixels).div_ceil(64),
            &[&x, &out],
            &[b as u32, pixels as u32],
        );
        out
    }
}
