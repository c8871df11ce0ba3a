//! Flick's hand-written WGSL compute kernels, behind a burn backend extension.
//!
//! - [`attention`]: `softmax(q·kᵀ/√d + bias)·v` in one pass over the keys (online softmax, tiled
//!   through workgroup memory, no `[Nq, Nk]` matrix in device memory), forward and backward.
//! - [`adaln`]: layer norm + DiT's per-sample scale/shift modulation in one pass per row,
//!   forward and backward.
//! - [`conv3d`]: the model's pixel-resolution convolutions (`KT×3×3`, stride 1, size-keeping
//!   padding), forward, input and weight gradients — chosen by profiling a training step on an
//!   H200 (after Flick's own attention, burn's direct convolutions were the next largest share
//!   of device time that one kernel could take: 13 %; matmuls were 16 %, cubecl's own). On the
//!   CPU the same operation runs as im2col and matrix products ([`conv_cpu`]): burn's CPU
//!   gradients of it were the slowest operation of a training step against PyTorch.
//! - [`clip_pixels`]: clips → packed 8-bit pixels for display (clamp, scale, round, channel
//!   axis last), a third of the read-back.
//!
//! The kernels are `kernels/*.wgsl`, validated by naga when this crate builds (`build.rs`), and
//! run on burn's wgpu backend wherever it compiles WGSL (Vulkan, Metal, DX12, WebGPU); the
//! trait [`ops::FusedOps`] carries the plain composition of burn operations as the
//! implementation for every other backend and as the kernels' reference. On the CPU (`flex`)
//! the wrappers below use burn's own operations, except the convolution and the attention, which
//! have CPU implementations of their own ([`conv_cpu`], [`attention_cpu`]: burn's CPU gradients
//! of them were the slowest operations of a training step against PyTorch); with
//! [`set_fused`]`(false)` (the CLI's `--no-fused`) burn's own operations everywhere, exactly as
//! the model did before the kernels existed. The GELU and SiLU have CPU implementations too
//! ([`gelu`], [`silu`]: burn's evaluate `erf` and `exp` one element at a time), and so does the
//! group norm ([`group_norm`]: burn's composition is a dozen passes over the tensor).

#[cfg(feature = "flex")]
pub mod activation_cpu;
#[cfg(feature = "flex")]
pub mod attention_cpu;
#[cfg(feature = "autodiff")]
mod autodiff;
#[cfg(feature = "flex")]
pub mod conv_cpu;
#[cfg(feature = "wgpu")]
mod cube;
#[cfg(feature = "flex")]
pub mod norm_cpu;

pub mod ops;
mod template;
pub mod textbook;
pub mod update;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

pub use burn::tensor::DispatchTensor;
pub use ops::{FusedOps, SUMSQ_SLOTS};
pub use template::{
    ATTENTION_TARGET_WORKGROUPS, CONV_KT, HEAD_DIMS, KERNELS, SPLITS, Variant, attention_tile,
    instantiate, splits_valid, variants,
};

static FUSED: AtomicBool = AtomicBool::new(true);
static FORCED_SPLITS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
pub(crate) static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) static INTERLEAVED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// How many attention kernel launches (forward and backward) read their operands with the heads
/// interleaved, straight from the linear layers' outputs (for tests and benchmarks: proof that
/// the model's attention runs without copies around the kernels).
pub fn interleaved_attention_launches() -> usize {
    INTERLEAVED.load(Ordering::Relaxed)
}

/// How many WGSL kernels this process has launched (for tests and benchmarks: proof that the
/// kernels, not the composed fallback, ran).
pub fn kernel_launches() -> usize {
    LAUNCHES.load(Ordering::Relaxed)
}

/// Use the fused kernels where they apply (the default), or burn's composed operations
/// everywhere (for comparison: `--no-fused`).
pub fn set_fused(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

/// Run the attention kernels with `splits` invocations per row wherever that is valid for the
/// head width (see [`splits_valid`]), instead of the automatic choice; `None` restores it. For
/// tests (every split on the same inputs) and measurements.
pub fn force_attention_splits(splits: Option<u32>) {
    FORCED_SPLITS.store(splits.unwrap_or(0), Ordering::Relaxed);
}

/// Invocations per row for an attention launch at head width `dh` over `heads` (batch ×
/// heads) of `rows` rows: the forced value where valid, otherwise the fewest that give the
/// GPU [`ATTENTION_TARGET_WORKGROUPS`] workgroups (`template::attention_splits`).
pub fn attention_splits(dh: u32, heads: usize, rows: usize) -> u32 {
    match FORCED_SPLITS.load(Ordering::Relaxed) {
        s if s > 0 && splits_valid(dh, s) => s,
        _ => template::attention_splits(dh, heads, rows),
    }
}

/// Whether the fused kernels are in use where they apply.
pub fn fused() -> bool {
    FUSED.load(Ordering::Relaxed)
}

/// Whether the fused path applies on `device`: fused on, and a GPU device (burn's cubecl
/// backend, possibly under autodiff). On the CPU burn's own operations are the implementation.
pub fn fused_on(device: &Device) -> bool {
    fused() && on_gpu(device)
}

/// Whether `device` is a GPU (burn's cubecl backend, possibly under autodiff); always false in a
/// build without the `wgpu` feature (the browser's CPU engine).
pub fn on_gpu(device: &Device) -> bool {
    #[cfg(feature = "wgpu")]
    return device.identity().is_some();
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        false
    }
}

/// The layer-norm epsilon of the model's adaLN (`1/sqrt(var + eps)`).
pub const LN_EPS: f32 = 1e-6;

/// Multi-head attention `softmax(q·kᵀ/√dh + bias)·v`.
///
/// `q: [B, H, Nq, dh]`, `k, v: [B, H, Nk, dh]`, `bias: [B, Nk]` (additive per key, e.g. −1e4
/// at padding; a constant: it gets no gradient) → `[B, H, Nq, dh]`. On a GPU the WGSL kernels,
/// on the CPU per-head matrix products ([`attention_cpu`]), with [`set_fused`]`(false)` burn's
/// `attention`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<2>>) -> Tensor<4> {
    let [b, h, nq, dh] = q.dims();
    let nk = k.dims()[2];
    let device = q.device();
    if !fused() {
        let bias = bias.map(|bias| bias.reshape([b, 1, 1, nk]).expand([b, h, nq, nk]));
        return burn_attention(q, k, v, None, bias, AttentionModuleOptions::default());
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([b, nk], &device));
    let scale = 1.0 / (dh as f32).sqrt();
    Tensor::from_dispatch(Dispatch::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        scale,
    ))
}

/// adaLN: `layer_norm(x)·(1 + scale) + shift`, the layer norm without affine parameters over
/// the last axis. `x: [B, N, d]`, `shift, scale: [B, d]` → `[B, N, d]`.
pub fn adaln(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    if !fused_on(&x.device()) {
        let mean = x.clone().mean_dim(2);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(2);
        let normed = centred / (var + LN_EPS as f64).sqrt();
        return normed * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1);
    }
    Tensor::from_dispatch(Dispatch::fused_adaln(
        x.into_dispatch(),
        shift.into_dispatch(),
        scale.into_dispatch(),
        LN_EPS,
    ))
}

/// A learned layer norm `layer_norm(x)·gamma + beta` over the last axis of `x [B, N, d]` (burn's
/// `LayerNorm` with `eps`), as the adaLN kernels with the scale `gamma − 1` and shift `beta`
/// broadcast over the batch: two kernel launches forward and backward where burn's composition
/// queues a dozen forward and two dozen backward. `None` where the kernels do not apply (off a
/// GPU, or with [`set_fused`]`(false)`): the caller runs burn's module.
pub fn layer_norm_affine(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f32,
) -> Option<Tensor<3>> {
    if !fused_on(&x.device()) {
        return None;
    }
    let [b, _, d] = x.dims();
    let across = |t: Tensor<1>| t.unsqueeze_dim::<2>(0).expand([b, d]);
    let scale = across(gamma - 1.0);
    let shift = across(beta.unwrap_or_else(|| Tensor::zeros([d], &x.device())));
    Some(Tensor::from_dispatch(Dispatch::fused_adaln(
        x.into_dispatch(),
        shift.into_dispatch(),
        scale.into_dispatch(),
        eps,
    )))
}

/// 3-D convolution of `x [B, Ci, T, H, W]` with `weight [Co, Ci, KT, KH, KW]` (odd sizes) and
/// `bias [Co]`, stride 1, zero padding `(KT/2, KH/2, KW/2)` so the output keeps the input's
/// size: `[B, Co, T, H, W]`. On a GPU the `KT×3×3` kernels (`KT` in [`CONV_KT`]) run it, forward
/// and backward; on the CPU im2col and matrix products ([`conv_cpu`]); with [`set_fused`]`(false)`
/// burn's `conv3d`.
pub fn conv3d(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    let [co, _, kt, kh, kw] = weight.dims();
    let device = x.device();
    if !fused() {
        let options =
            burn::tensor::ops::ConvOptions::new([1, 1, 1], [kt / 2, kh / 2, kw / 2], [1, 1, 1], 1);
        return burn::tensor::module::conv3d(x, weight, bias, options);
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([co], &device));
    Tensor::from_dispatch(Dispatch::fused_conv3d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Group norm without affine parameters over `x [B, C, T, H, W]`: per sample and per group of
/// `C / groups` channels, over the group's channels and all positions, `(x − mean)/sqrt(var +
/// eps)` (biased variance). On the CPU two passes forward and two backward ([`norm_cpu`]); on a
/// GPU one kernel launch forward and one backward (`row_norm_fwd`, `row_norm_bwd`: a workgroup
/// per row); with [`set_fused`]`(false)`, burn's operations (mean, variance, divide).
pub fn group_norm(x: Tensor<5>, groups: usize, eps: f32) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    let rows = [b * groups, (c / groups) * t * h * w];
    if !fused() {
        let g = x.reshape(rows);
        let mean = g.clone().mean_dim(1);
        let centred = g - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        return (centred / (var + eps).sqrt()).reshape([b, c, t, h, w]);
    }
    let y: Tensor<2> = Tensor::from_dispatch(Dispatch::fused_row_norm(
        x.reshape(rows).into_dispatch(),
        eps,
    ));
    y.reshape([b, c, t, h, w])
}

/// GELU `x·Φ(x)` (the exact form, `Φ` the standard normal CDF). On the CPU one vectorised pass
/// forward and one backward ([`activation_cpu`]); on a GPU, and with [`set_fused`]`(false)`,
/// burn's `gelu` (on a GPU burn's fusion merges it with the element-wise operations around it).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused() || on_gpu(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(Dispatch::fused_gelu(x.into_dispatch()))
}

/// SiLU `x·σ(x)`: on the CPU one vectorised pass forward and one backward ([`activation_cpu`]);
/// on a GPU one kernel launch forward and one backward (`silu_fb`: burn's composed backward is
/// a dozen launches); with [`set_fused`]`(false)`, burn's `silu`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused() {
        return burn::tensor::activation::silu(x);
    }
    Tensor::from_dispatch(Dispatch::fused_silu(x.into_dispatch()))
}

/// Keep cubecl's autotune results (and compiled-kernel records) in `dir`, shared by every run on
/// this machine whatever its working directory, so that a GPU run after the first starts with
/// its kernels tuned. cubecl's own default is `target/environment` of the Cargo workspace around
/// the working directory (or the user cache outside one): a run started elsewhere, or from a
/// fresh checkout, would tune again. A `cubecl.toml` or `CUBECL_*` variable that names another
/// place wins. Call before the first GPU device is opened; returns whether the setting took.
#[cfg(not(target_family = "wasm"))]
pub fn keep_autotune_cache(dir: &std::path::Path) -> bool {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if !matches!(config.environment.path, CacheConfig::Target) {
        return false;
    }
    config.environment.path = CacheConfig::Directory(dir.to_path_buf());
    CubeClRuntimeConfig::try_set(config)
}

/// One AdamW step and the EMA over one flat parameter, `p = [w, g, m, v, a, s]` (weights,
/// gradient, moments, average, `[n]` each, and `s`): returns the new `(w, m, v, a)`. `s` `[4]`,
/// on the same device: clip scale, taken (1; 0 returns the inputs unchanged), c₁ = 1 − β₁ᵗ,
/// c₂ = 1 − β₂ᵗ — values a training step computes on the device, so that the host need not read
/// anything back to update. `h` = β₁, β₂, ε, weight decay, lr, EMA decay. On a GPU one kernel
/// launch per parameter; elsewhere, with [`set_fused`]`(false)` or with `composed`, burn's
/// operations (the reference the kernel is held to).
pub fn adamw(
    p: [Tensor<1>; 6],
    h: [f32; 6],
    composed: bool,
) -> (Tensor<1>, Tensor<1>, Tensor<1>, Tensor<1>) {
    let kernel = !composed && fused_on(&p[0].device());
    let (w, m, v, a) = adamw_any(p.map(Tensor::into_dispatch), h, kernel);
    let t = Tensor::<1>::from_dispatch;
    (t(w), t(m), t(v), t(a))
}

/// [`adamw`] on tensors of any rank, as burn's dispatch primitives: `w, a` of the parameter's
/// shape, `g, m, v` of any shape with as many elements; each result has its input's shape (so
/// that an optimizer updates parameters without reshaping them). `kernel`: the WGSL kernel
/// (where [`fused_on`] the device), else burn's operations.
pub fn adamw_any(
    p: [DispatchTensor; 6],
    h: [f32; 6],
    kernel: bool,
) -> (
    DispatchTensor,
    DispatchTensor,
    DispatchTensor,
    DispatchTensor,
) {
    let [w, g, m, v, a, s] = p;
    let [b1, b2, eps, wd, lr, d] = h;
    if kernel {
        Dispatch::fused_adamw(w, g, m, v, a, s, b1, b2, eps, wd, lr, d)
    } else {
        ops::adamw_reference::<Dispatch>(w, g, m, v, a, s, h)
    }
}

/// The dimensions of a dispatch primitive.
pub fn dims_any(x: &DispatchTensor) -> Vec<usize> {
    burn::backend::TensorMetadata::shape(x).to_vec()
}

/// `x` reshaped to `dims` (as many elements), on burn's dispatch primitives.
pub fn reshape_any(x: DispatchTensor, dims: &[usize]) -> DispatchTensor {
    <Dispatch as burn::backend::ops::FloatTensorOps<Dispatch>>::float_reshape(
        x,
        burn::backend::Shape::from(dims.to_vec()),
    )
}

/// Row `row` of `table` (`[rows·SUMSQ_SLOTS]`) replaced by partial sums of `x²` adding up to
/// `Σx²` (see [`FusedOps::fused_sumsq`]); `x` of any rank. A global gradient norm is the square
/// root of the sum of a table with a row per parameter: on a GPU one kernel launch per
/// parameter, in place; with `composed` (or off a GPU) burn's operations.
pub fn sumsq_into(table: Tensor<1>, x: DispatchTensor, row: usize, composed: bool) -> Tensor<1> {
    let kernel = !composed && fused_on(&table.device());
    let table = table.into_dispatch();
    Tensor::<1>::from_dispatch(if kernel {
        Dispatch::fused_sumsq(x, table, row)
    } else {
        ops::sumsq_reference::<Dispatch>(x, table, row)
    })
}

/// Clips `[B, 3, T, H, W]` in [-1, 1] → RGBA8 frames, one `Vec<u8>` of `T·H·W·4` bytes per
/// clip (the same bytes as clamping, scaling by 127.5 and rounding on the CPU). On a GPU the
/// conversion runs there and only the packed pixels are read back.
pub fn clip_pixels(x: Tensor<5>) -> Result<Vec<Vec<u8>>, String> {
    let dims = x.dims();
    let read = |d: burn::tensor::TensorData| d.try_to_vec::<f32>().map_err(|e| format!("{e:?}"));
    if !fused_on(&x.device()) {
        return Ok(rgba_on_cpu(read(x.into_data())?, dims));
    }
    Ok(unpack(
        read(Tensor::<4>::from_dispatch(Dispatch::clip_pixels(x.into_dispatch())).into_data())?,
        dims,
    ))
}

/// [`clip_pixels`] with an asynchronous read-back (the browser).
pub async fn clip_pixels_async(x: Tensor<5>) -> Result<Vec<Vec<u8>>, String> {
    let dims = x.dims();
    let read = |d: burn::tensor::TensorData| d.try_to_vec::<f32>().map_err(|e| format!("{e:?}"));
    if !fused_on(&x.device()) {
        let data = x.into_data_async().await.map_err(|e| format!("{e:?}"))?;
        return Ok(rgba_on_cpu(read(data)?, dims));
    }
    let packed = Tensor::<4>::from_dispatch(Dispatch::clip_pixels(x.into_dispatch()));
    let data = packed
        .into_data_async()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(unpack(read(data)?, dims))
}

fn byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

fn rgba_on_cpu(values: Vec<f32>, [b, c, t, h, w]: [usize; 5]) -> Vec<Vec<u8>> {
    assert_eq!(c, 3, "clips have 3 channels");
    let n = t * h * w;
    (0..b)
        .map(|i| {
            let clip = &values[i * 3 * n..(i + 1) * 3 * n];
            (0..n)
                .flat_map(|p| [byte(clip[p]), byte(clip[n + p]), byte(clip[2 * n + p]), 255])
                .collect()
        })
        .collect()
}

/// `clip_pixels`' packed pixels of `[B, 3, T, H, W]` clips → RGBA8 frames, one buffer per clip.
pub fn unpack(packed: Vec<f32>, [b, _, t, h, w]: [usize; 5]) -> Vec<Vec<u8>> {
    let n = t * h * w;
    (0..b)
        .map(|i| {
            packed[i * n..(i + 1) * n]
                .iter()
                .flat_map(|&p| {
                    let p = p as u32;
                    [
                        (p & 255) as u8,
                        ((p >> 8) & 255) as u8,
                        ((p >> 16) & 255) as u8,
                        255,
                    ]
                })
                .collect()
        })
        .collect()
}
