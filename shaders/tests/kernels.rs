//! Each kernel against a textbook formula computed with burn's operations on the CPU, on fresh
//! random inputs (never zeros), for several shapes including ragged ones (lengths that are not
//! multiples of the tiles, fewer keys than a tile), on a real wgpu device (lavapipe in CI).
//! The trait's composed reference (what other backends run) and the CPU's own implementations
//! are checked the same way on the CPU.
//! Under CI=true a missing GPU adapter is a failure; elsewhere the GPU tests say NOT RUN.

use std::sync::OnceLock;

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::Distribution;
use flick_shaders::FusedOps;

/// The wgpu device, if a Vulkan/Metal/DX12 adapter exists. An OpenGL adapter (what wgpu falls
/// back to without a Vulkan driver) is refused, as the CLI refuses it: the kernels would then be
/// tested on a backend Flick does not run on.
fn gpu() -> Option<Device> {
    static GPU: OnceLock<Option<Device>> = OnceLock::new();
    GPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options().init_with_setup().ok()?;
        if setup.backend == burn::tensor::wgpu::wgpu::Backend::Gl {
            eprintln!(
                "wgpu found only an OpenGL adapter ({}): not a device Flick runs on",
                setup.adapter.get_info().name
            );
            return None;
        }
        Some(device)
    })
    .clone()
}

/// The wgpu device, or `None` after saying so (a failure under CI=true).
fn gpu_or_not_run(test: &str) -> Option<Device> {
    let device = gpu();
    if device.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!(
                "{test}: no Vulkan wgpu adapter, and CI=true requires one (run scripts/setup.sh test: mesa-vulkan-drivers)"
            );
        }
        eprintln!(
            "\n*** NOT RUN: {test}: no wgpu adapter on this machine (CI=true would fail) ***\n"
        );
    }
    device
}

fn cpu() -> Device {
    Device::flex()
}

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    let device = cpu();
    device.seed(seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

fn to(t: &Tensor<4>, device: &Device) -> Tensor<4> {
    Tensor::from_data(t.to_data(), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Largest |a − b| relative to the largest |b| (at least 1).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The textbook attention (burn operations, on whatever device the inputs live): `(o, lse)`.
fn textbook_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<2>,
) -> (Tensor<4>, Tensor<3>) {
    let [b, h, nq, dh] = q.dims();
    let nk = k.dims()[2];
    let s = q.matmul(k.swap_dims(2, 3)) / (dh as f32).sqrt()
        + bias.reshape([b, 1, 1, nk]).expand([b, h, nq, nk]);
    let m = s.clone().max_dim(3);
    let e = (s - m.clone()).exp();
    let l = e.clone().sum_dim(3);
    let o = (e / l.clone()).matmul(v);
    (o, (m + l.log()).reshape([b, h, nq]))
}

/// A key bias with padding: the last `pad` keys of odd samples at −1e4, small noise elsewhere.
fn key_bias(b: usize, nk: usize, pad: usize, seed: u64) -> Tensor<2> {
    let mut bias = values(random([b, nk], seed) * 0.3);
    for s in (1..b).step_by(2) {
        for j in nk.saturating_sub(pad)..nk {
            bias[s * nk + j] = -1e4;
        }
    }
    Tensor::from_data(TensorData::new(bias, [b, nk]), &cpu())
}

/// Held by the tests that force the attention kernels' split (a process-wide setting), so each
/// runs every split it asks for.
static SPLITS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// (B, H, Nq, Nk, dh): tile-aligned, ragged, fewer keys than a tile, every head width.
const ATTENTION_SHAPES: [[usize; 5]; 5] = [
    [2, 2, 64, 64, 32],
    [1, 3, 37, 50, 16],
    [2, 1, 100, 7, 8],
    [2, 2, 70, 96, 64],
    [3, 4, 129, 33, 32],
];

fn attention_forward_matches(device: &Device, what: &str) {
    for (i, &[b, h, nq, nk, dh]) in ATTENTION_SHAPES.iter().enumerate() {
        let seed = 10 * i as u64;
        let (q, k, v) = (
            random([b, h, nq, dh], seed),
            random([b, h, nk, dh], seed + 1),
            random([b, h, nk, dh], seed + 2),
        );
        let bias = key_bias(b, nk, nk / 3, seed + 3);
        let (o_ref, lse_ref) = textbook_attention(q.clone(), k.clone(), v.clone(), bias.clone());
        let scale = 1.0 / (dh as f32).sqrt();
        let (o, lse) = Dispatch::fused_attention_fwd(
            to(&q, device).into_dispatch(),
            to(&k, device).into_dispatch(),
            to(&v, device).into_dispatch(),
            Tensor::<2>::from_data(bias.to_data(), device).into_dispatch(),
            scale,
        );
        let (o, lse) = (
            Tensor::<4>::from_dispatch(o),
            Tensor::<3>::from_dispatch(lse),
        );
        assert_eq!(o.dims(), [b, h, nq, dh]);
        let (d_o, d_lse) = (
            rel_diff(&values(o), &values(o_ref)),
            rel_diff(&values(lse), &values(lse_ref)),
        );
        assert!(
            d_o < 1e-4 && d_lse < 1e-4,
            "{what}: attention {:?}: output differs by {d_o:e}, lse by {d_lse:e}",
            [b, h, nq, nk, dh]
        );
    }
}

/// Textbook gradients `[dq, dk, dv]` of `Σ o·g`, by burn's autodiff on the CPU.
fn textbook_attention_grads(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    bias: &Tensor<2>,
    g: &Tensor<4>,
) -> [Tensor<4>; 3] {
    let ad = cpu().autodiff();
    let (qa, ka, va) = (
        to(q, &ad).require_grad(),
        to(k, &ad).require_grad(),
        to(v, &ad).require_grad(),
    );
    let (o, _) = textbook_attention(
        qa.clone(),
        ka.clone(),
        va.clone(),
        Tensor::from_data(bias.to_data(), &ad),
    );
    let grads = (o * to(g, &ad)).sum().backward();
    [
        qa.grad(&grads).unwrap(),
        ka.grad(&grads).unwrap(),
        va.grad(&grads).unwrap(),
    ]
}

fn attention_gradients_match(device: &Device, what: &str) {
    for (i, &[b, h, nq, nk, dh]) in ATTENTION_SHAPES.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (q, k, v) = (
            random([b, h, nq, dh], seed),
            random([b, h, nk, dh], seed + 1),
            random([b, h, nk, dh], seed + 2),
        );
        let bias = key_bias(b, nk, nk / 3, seed + 3);
        let g = random([b, h, nq, dh], seed + 4);
        let expect = textbook_attention_grads(&q, &k, &v, &bias, &g);
        // The fused operation under autodiff (its backward is the fused backward).
        let ad = device.clone().autodiff();
        let (qa, ka, va) = (
            to(&q, &ad).require_grad(),
            to(&k, &ad).require_grad(),
            to(&v, &ad).require_grad(),
        );
        let o = Tensor::<4>::from_dispatch(Dispatch::fused_attention(
            qa.clone().into_dispatch(),
            ka.clone().into_dispatch(),
            va.clone().into_dispatch(),
            Tensor::<2>::from_data(bias.to_data(), &ad).into_dispatch(),
            1.0 / (dh as f32).sqrt(),
        ));
        let grads = (o * to(&g, &ad)).sum().backward();
        let got = [
            qa.grad(&grads).unwrap(),
            ka.grad(&grads).unwrap(),
            va.grad(&grads).unwrap(),
        ];
        for (name, (got, expect)) in ["dq", "dk", "dv"].iter().zip(got.into_iter().zip(expect)) {
            let d = rel_diff(&values(got), &values(expect));
            assert!(
                d < 1e-3,
                "{what}: attention {:?}: {name} differs by {d:e}",
                [b, h, nq, nk, dh]
            );
        }
    }
}

/// (B, N, d): the model's widths, ragged rows, a width that is not a multiple of 64.
const ADALN_SHAPES: [[usize; 3]; 3] = [[2, 64, 128], [3, 37, 64], [1, 5, 200]];

fn textbook_adaln(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let c = x - mean;
    let var = c.clone().powi_scalar(2).mean_dim(2);
    c / (var + 1e-6).sqrt() * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

fn adaln_matches(device: &Device, what: &str) {
    for (i, &[b, n, d]) in ADALN_SHAPES.iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let x = random([b, n, d], seed) * 2.0 + 0.5;
        let (shift, scale) = (
            random([b, d], seed + 1) * 0.5,
            random([b, d], seed + 2) * 0.5,
        );
        let g = random([b, n, d], seed + 3);
        let ad = cpu().autodiff();
        let on = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &ad).require_grad();
        let on2 = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &ad).require_grad();
        let (xa, sha, sca) = (on(&x), on2(&shift), on2(&scale));
        let y_ref = textbook_adaln(xa.clone(), sha.clone(), sca.clone());
        let grads = (y_ref.clone() * Tensor::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        let expect = (
            values(xa.grad(&grads).unwrap()),
            values(sha.grad(&grads).unwrap()),
            values(sca.grad(&grads).unwrap()),
        );

        let ad = device.clone().autodiff();
        let on = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &ad).require_grad();
        let on2 = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &ad).require_grad();
        let (xa, sha, sca) = (on(&x), on2(&shift), on2(&scale));
        let y = Tensor::<3>::from_dispatch(Dispatch::fused_adaln(
            xa.clone().into_dispatch(),
            sha.clone().into_dispatch(),
            sca.clone().into_dispatch(),
            flick_shaders::LN_EPS,
        ));
        let dy = rel_diff(&values(y.clone()), &values(y_ref));
        assert!(
            dy < 1e-4,
            "{what}: adaLN {:?}: output differs by {dy:e}",
            [b, n, d]
        );
        let grads = (y * Tensor::from_data(g.to_data(), &ad)).sum().backward();
        let got = (
            values(xa.grad(&grads).unwrap()),
            values(sha.grad(&grads).unwrap()),
            values(sca.grad(&grads).unwrap()),
        );
        for (name, got, expect) in [
            ("dx", got.0, expect.0),
            ("dshift", got.1, expect.1),
            ("dscale", got.2, expect.2),
        ] {
            let diff = rel_diff(&got, &expect);
            assert!(
                diff < 1e-3,
                "{what}: adaLN {:?}: {name} differs by {diff:e}",
                [b, n, d]
            );
        }
    }
}

fn pixels_match(device: &Device, what: &str) {
    for (i, shape) in [[2, 3, 8, 32, 32], [1, 3, 3, 5, 7]].into_iter().enumerate() {
        // Values beyond [-1, 1] too (clamped), and exact halves (rounded up).
        let mut x = values(random::<5>(shape, 300 + i as u64) * 0.8);
        x[0] = -3.0;
        x[1] = 2.5;
        x[2] = 1.0 / 255.0;
        let t = Tensor::<5>::from_data(TensorData::new(x.clone(), shape), device);
        let packed = values(Tensor::<4>::from_dispatch(Dispatch::clip_pixels(
            t.into_dispatch(),
        )));
        let [b, _, f, h, w] = shape;
        let n = f * h * w;
        let mut worst = 0i32;
        for clip in 0..b {
            for p in 0..n {
                let got = packed[clip * n + p] as u32;
                for c in 0..3 {
                    let expect =
                        ((x[(clip * 3 + c) * n + p].clamp(-1.0, 1.0) + 1.0) * 127.5).round() as i32;
                    worst = worst.max((((got >> (8 * c)) & 255) as i32 - expect).abs());
                }
            }
        }
        assert_eq!(
            worst, 0,
            "{what}: clip pixels {shape:?} differ from the CPU's bytes by up to {worst}"
        );
    }
}

#[test]
fn attention_forward_kernel_matches_the_textbook() {
    if let Some(gpu) = gpu_or_not_run("attention_forward_kernel_matches_the_textbook") {
        let _splits = SPLITS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before = flick_shaders::kernel_launches();
        for s in flick_shaders::SPLITS.iter().map(|&s| Some(s)).chain([None]) {
            flick_shaders::force_attention_splits(s);
            attention_forward_matches(&gpu, &format!("wgpu kernel, splits {s:?}"));
        }
        flick_shaders::force_attention_splits(None);
        assert!(
            flick_shaders::kernel_launches() > before,
            "no WGSL kernel was launched: the composed fallback ran"
        );
    }
}

#[test]
fn attention_backward_kernels_match_autodiff_of_the_textbook() {
    if let Some(gpu) = gpu_or_not_run("attention_backward_kernels_match_autodiff_of_the_textbook") {
        let _splits = SPLITS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before = flick_shaders::kernel_launches();
        for s in flick_shaders::SPLITS.iter().map(|&s| Some(s)).chain([None]) {
            flick_shaders::force_attention_splits(s);
            attention_gradients_match(&gpu, &format!("wgpu kernels, splits {s:?}"));
        }
        flick_shaders::force_attention_splits(None);
        assert!(
            flick_shaders::kernel_launches() > before,
            "no WGSL kernel was launched: the composed fallback ran"
        );
    }
}

#[test]
fn adaln_kernels_match_the_textbook_forward_and_backward() {
    if let Some(gpu) = gpu_or_not_run("adaln_kernels_match_the_textbook_forward_and_backward") {
        let before = flick_shaders::kernel_launches();
        adaln_matches(&gpu, "wgpu kernels");
        assert!(
            flick_shaders::kernel_launches() > before,
            "no WGSL kernel was launched: the composed fallback ran"
        );
    }
}

#[test]
fn clip_pixel_kernel_gives_the_cpu_bytes() {
    if let Some(gpu) = gpu_or_not_run("clip_pixel_kernel_gives_the_cpu_bytes") {
        let before = flick_shaders::kernel_launches();
        pixels_match(&gpu, "wgpu kernel");
        assert!(
            flick_shaders::kernel_launches() > before,
            "no WGSL kernel was launched: the composed fallback ran"
        );
    }
}

/// The composed reference (the trait's default bodies, what every other backend runs and what
/// a non-WGSL GPU compiler falls back to), on the CPU; the CPU's own attention
/// (`attention_cpu`, the `FusedOps` attention on flex) the same way.
#[test]
fn composed_reference_and_cpu_attention_match_the_textbook_on_the_cpu() {
    attention_forward_matches(&cpu(), "CPU attention");
    attention_gradients_match(&cpu(), "CPU attention");
    adaln_matches(&cpu(), "composed reference");
    pixels_match(&cpu(), "composed reference");
    for (i, &[b, h, nq, nk, dh]) in ATTENTION_SHAPES.iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let (q, k, v) = (
            random([b, h, nq, dh], seed),
            random([b, h, nk, dh], seed + 1),
            random([b, h, nk, dh], seed + 2),
        );
        let bias = key_bias(b, nk, nk / 3, seed + 3);
        let g = random([b, h, nq, dh], seed + 4);
        let scale = 1.0 / (dh as f32).sqrt();
        let d = |t: &Tensor<4>| t.clone().into_dispatch();
        let (o, lse) = flick_shaders::ops::attention_fwd_reference::<Dispatch>(
            d(&q),
            d(&k),
            d(&v),
            bias.clone().into_dispatch(),
            scale,
        );
        let (o, lse) = (
            Tensor::<4>::from_dispatch(o),
            Tensor::<3>::from_dispatch(lse),
        );
        let (o_ref, lse_ref) = textbook_attention(q.clone(), k.clone(), v.clone(), bias.clone());
        let (d_o, d_lse) = (
            rel_diff(&values(o.clone()), &values(o_ref)),
            rel_diff(&values(lse.clone()), &values(lse_ref)),
        );
        assert!(
            d_o < 1e-4 && d_lse < 1e-4,
            "composed reference: attention {:?}: output differs by {d_o:e}, lse by {d_lse:e}",
            [b, h, nq, nk, dh]
        );
        let grads = flick_shaders::ops::attention_bwd_reference::<Dispatch>(
            d(&q),
            d(&k),
            d(&v),
            bias.clone().into_dispatch(),
            o.into_dispatch(),
            lse.into_dispatch(),
            d(&g),
            scale,
        );
        let expect = textbook_attention_grads(&q, &k, &v, &bias, &g);
        let got = [grads.0, grads.1, grads.2].map(Tensor::<4>::from_dispatch);
        for (name, (got, expect)) in ["dq", "dk", "dv"].iter().zip(got.into_iter().zip(expect)) {
            let diff = rel_diff(&values(got), &values(expect));
            assert!(
                diff < 1e-3,
                "composed reference: attention {:?}: {name} differs by {diff:e}",
                [b, h, nq, nk, dh]
            );
        }
    }
}

/// The public wrappers with the kernels on (on the GPU) agree with burn's own operations.
#[test]
fn wrappers_match_burn_operations() {
    let Some(gpu) = gpu_or_not_run("wrappers_match_burn_operations") else {
        return;
    };
    let (q, k, v) = (
        random([2, 4, 45, 32], 1),
        random([2, 4, 20, 32], 2),
        random([2, 4, 20, 32], 3),
    );
    let bias = key_bias(2, 20, 5, 4);
    let burn_o = burn::tensor::module::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        Some(bias.clone().reshape([2, 1, 1, 20]).expand([2, 4, 45, 20])),
        Default::default(),
    );
    let o = flick_shaders::attention(
        to(&q, &gpu),
        to(&k, &gpu),
        to(&v, &gpu),
        Some(Tensor::from_data(bias.to_data(), &gpu)),
    );
    let d = rel_diff(&values(o), &values(burn_o));
    assert!(d < 1e-4, "fused attention vs burn's differs by {d:e}");
    let clips = random([2, 3, 4, 8, 8], 5);
    let on_gpu = flick_shaders::clip_pixels(Tensor::from_data(clips.to_data(), &gpu)).unwrap();
    let on_cpu = flick_shaders::clip_pixels(clips).unwrap();
    assert_eq!(
        on_gpu, on_cpu,
        "RGBA frames from the GPU kernel differ from the CPU's"
    );
    assert_eq!(on_gpu[0].len(), 4 * 8 * 8 * 4);
}

/// (B, Ci, Co, T, H, W, KT): the stem (3×3×3 from RGB), the head (32 → 16, 16 → 3: output
/// channels not a multiple of the kernel's block of 4), a row wider than a workgroup, odd sizes.
const CONV_SHAPES: [[usize; 7]; 4] = [
    [2, 3, 16, 4, 9, 11, 3],
    [1, 32, 16, 2, 8, 8, 1],
    [2, 16, 3, 3, 5, 70, 1],
    [1, 5, 6, 5, 7, 6, 3],
];

fn conv_forward_matches(device: &Device, what: &str) {
    for (i, &[b, ci, co, t, h, w, kt]) in CONV_SHAPES.iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (x, wt, bias) = (
            random([b, ci, t, h, w], seed),
            random([co, ci, kt, 3, 3], seed + 1),
            random::<1>([co], seed + 2),
        );
        let (expect, _) = flick_shaders::textbook::conv3d(
            &values(x.clone()),
            [b, ci, t, h, w],
            &values(wt.clone()),
            [co, ci, kt, 3, 3],
            &values(bias.clone()),
            [1, 1, 1],
            [kt / 2, 1, 1],
        );
        let y = Dispatch::fused_conv3d_fwd(
            Tensor::<5>::from_data(x.to_data(), device).into_dispatch(),
            Tensor::<5>::from_data(wt.to_data(), device).into_dispatch(),
            Tensor::<1>::from_data(bias.to_data(), device).into_dispatch(),
        );
        let y = Tensor::<5>::from_dispatch(y);
        assert_eq!(y.dims(), [b, co, t, h, w]);
        let d = rel_diff(&values(y), &expect);
        assert!(
            d < 1e-5,
            "{what}: conv {:?}: output differs by {d:e}",
            [b, ci, co, t, h, w, kt]
        );
    }
}

fn conv_gradients_match(device: &Device, what: &str) {
    for (i, &[b, ci, co, t, h, w, kt]) in CONV_SHAPES.iter().enumerate() {
        let seed = 400 + 10 * i as u64;
        let (x, wt, bias, g) = (
            random([b, ci, t, h, w], seed),
            random([co, ci, kt, 3, 3], seed + 1),
            random::<1>([co], seed + 2),
            random([b, co, t, h, w], seed + 3),
        );
        // Gradients of Σ y·g by burn's autodiff of burn's own conv3d on the CPU.
        let ad = cpu().autodiff();
        let (xa, wa, ba) = (
            Tensor::<5>::from_data(x.to_data(), &ad).require_grad(),
            Tensor::<5>::from_data(wt.to_data(), &ad).require_grad(),
            Tensor::<1>::from_data(bias.to_data(), &ad).require_grad(),
        );
        let options = burn::tensor::ops::ConvOptions::new([1, 1, 1], [kt / 2, 1, 1], [1, 1, 1], 1);
        let y = burn::tensor::module::conv3d(xa.clone(), wa.clone(), Some(ba.clone()), options);
        let grads = (y * Tensor::<5>::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        let expect = [
            values(xa.grad(&grads).unwrap()),
            values(wa.grad(&grads).unwrap()),
            values(ba.grad(&grads).unwrap()),
        ];
        // The fused operation under autodiff on `device`.
        let ad = device.clone().autodiff();
        let (xa, wa, ba) = (
            Tensor::<5>::from_data(x.to_data(), &ad).require_grad(),
            Tensor::<5>::from_data(wt.to_data(), &ad).require_grad(),
            Tensor::<1>::from_data(bias.to_data(), &ad).require_grad(),
        );
        let y = Tensor::<5>::from_dispatch(Dispatch::fused_conv3d(
            xa.clone().into_dispatch(),
            wa.clone().into_dispatch(),
            ba.clone().into_dispatch(),
        ));
        let grads = (y * Tensor::<5>::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        let got = [
            values(xa.grad(&grads).unwrap()),
            values(wa.grad(&grads).unwrap()),
            values(ba.grad(&grads).unwrap()),
        ];
        for (name, (got, expect)) in ["dx", "dw", "dbias"].iter().zip(got.iter().zip(&expect)) {
            let d = rel_diff(got, expect);
            assert!(
                d < 1e-4,
                "{what}: conv {:?}: {name} differs by {d:e}",
                [b, ci, co, t, h, w, kt]
            );
        }
        // An input that needs no gradient (a clip entering the stem): the weight gradients alone.
        let xa = Tensor::<5>::from_data(x.to_data(), &ad);
        let y = Tensor::<5>::from_dispatch(Dispatch::fused_conv3d(
            xa.clone().into_dispatch(),
            wa.clone().into_dispatch(),
            ba.clone().into_dispatch(),
        ));
        let grads = (y * Tensor::<5>::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        assert!(
            xa.grad(&grads).is_none(),
            "{what}: a gradient for an input that needs none"
        );
        let d = rel_diff(&values(wa.grad(&grads).unwrap()), &expect[1]);
        assert!(
            d < 1e-4,
            "{what}: conv {:?}, input without gradient: dw differs by {d:e}",
            [b, ci, co, t, h, w, kt]
        );
    }
}

#[test]
fn conv_kernels_match_the_textbook_forward_and_backward() {
    if let Some(gpu) = gpu_or_not_run("conv_kernels_match_the_textbook_forward_and_backward") {
        let before = flick_shaders::kernel_launches();
        conv_forward_matches(&gpu, "wgpu kernel");
        conv_gradients_match(&gpu, "wgpu kernels");
        assert!(
            flick_shaders::kernel_launches() > before,
            "no WGSL kernel was launched: the composed fallback ran"
        );
    }
}

/// On the CPU the fused convolution is Flick's im2col + matrix-product implementation
/// (`conv_cpu`), held to the textbook forward and to burn's autodiff of burn's own `conv3d`.
#[test]
fn conv_cpu_implementation_matches_the_textbook_and_burns_gradients() {
    conv_forward_matches(&cpu(), "CPU convolution");
    conv_gradients_match(&cpu(), "CPU convolution");
}

/// AdamW + EMA written out per element in f64 (the kernel's formulas; `s` = clip scale, taken,
/// c₁, c₂; `h` = β₁, β₂, ε, wd, lr, EMA decay).
fn textbook_adamw(
    w: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    a: &[f32],
    s: [f32; 4],
    h: [f32; 6],
) -> Vec<Vec<f32>> {
    let [scale, taken, c1, c2] = s.map(|x| x as f64);
    let [b1, b2, eps, wd, lr, d] = h.map(|x| x as f64);
    if taken == 0.0 {
        return [w, m, v, a].map(|x| x.to_vec()).to_vec();
    }
    let mut out = vec![Vec::new(); 4];
    for i in 0..w.len() {
        let gi = g[i] as f64 * scale;
        let mi = m[i] as f64 * b1 + gi * (1.0 - b1);
        let vi = v[i] as f64 * b2 + gi * gi * (1.0 - b2);
        let wi = w[i] as f64 - ((mi / c1) / ((vi / c2).sqrt() + eps) + w[i] as f64 * wd) * lr;
        out[0].push(wi as f32);
        out[1].push(mi as f32);
        out[2].push(vi as f32);
        out[3].push((a[i] as f64 * d + wi * (1.0 - d)) as f32);
    }
    out
}

fn adamw_matches(device: &Device, what: &str) {
    // Lengths below, at and past a workgroup, and a parameter the size of an MLP layer; a taken
    // step, and one not taken whose gradient is not finite (everything must come back as it was,
    // bit for bit: no NaN leaks through).
    let cases = [1usize, 63, 64, 1000, 65_537]
        .into_iter()
        .map(|n| (n, true))
        .chain([(1000, false), (65_537, false)]);
    for (k, (n, taken)) in cases.enumerate() {
        let seed = 500 + 10 * k as u64;
        let r = |s: u64, f: f32| {
            values(random([n], seed + s))
                .iter()
                .map(|x| x * f)
                .collect::<Vec<f32>>()
        };
        let (w, mut g, m) = (r(0, 0.1), r(1, 3.0), r(2, 0.1));
        let v: Vec<f32> = r(3, 0.1).iter().map(|x| x * x).collect();
        let a = r(4, 0.1);
        let s = if taken {
            [0.37, 1.0, 1.0 - 0.9f32.powi(7), 1.0 - 0.99f32.powi(7)]
        } else {
            g[n / 2] = f32::NAN;
            [f32::NAN, 0.0, 0.0, 0.0]
        };
        let h = [0.9, 0.99, 1e-8, 0.01, 5e-3, 0.999];
        let t = |x: &[f32]| Tensor::<1>::from_data(TensorData::new(x.to_vec(), [x.len()]), device);
        let (w2, m2, v2, a2) =
            flick_shaders::adamw([t(&w), t(&g), t(&m), t(&v), t(&a), t(&s)], h, false);
        let expect = textbook_adamw(&w, &g, &m, &v, &a, s, h);
        for (name, got, want) in [
            ("weights", w2, &expect[0]),
            ("first moment", m2, &expect[1]),
            ("second moment", v2, &expect[2]),
            ("average", a2, &expect[3]),
        ] {
            let got = values(got);
            if taken {
                let diff = rel_diff(&got, want);
                assert!(
                    diff < 1e-6,
                    "{what}: AdamW {name}, n = {n}: differs by {diff}"
                );
            } else {
                assert!(
                    &got == want,
                    "{what}: AdamW {name}, n = {n}: a step not taken changed it"
                );
            }
        }
    }
}

#[test]
fn adamw_kernel_matches_the_textbook() {
    if let Some(gpu) = gpu_or_not_run("adamw_kernel_matches_the_textbook") {
        let before = flick_shaders::kernel_launches();
        adamw_matches(&gpu, "wgpu kernel");
        assert!(
            flick_shaders::kernel_launches() >= before + 7,
            "the AdamW kernel did not run"
        );
    }
    adamw_matches(&cpu(), "composed reference (CPU)");
}

/// The textbook GELU and its slope written out in f64 from burn's f32 `erf` inputs:
/// `(x·Φ(x), Φ(x) + x·φ(x))` per element, `Φ(x) = (1 + erf(x/√2))/2`.
fn textbook_gelu(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let t = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [x.len()]), &cpu());
    let erf = values((t / std::f32::consts::SQRT_2).erf());
    let (mut y, mut slope) = (Vec::new(), Vec::new());
    for (&x, &e) in x.iter().zip(&erf) {
        let (x, cdf) = (x as f64, 0.5 * (1.0 + e as f64));
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        y.push((x * cdf) as f32);
        slope.push((cdf + x * pdf) as f32);
    }
    (y, slope)
}

/// The textbook SiLU and its slope in f64: `(x·σ(x), σ(x)·(1 + x·(1 − σ(x))))` per element.
fn textbook_silu(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    x.iter()
        .map(|&x| {
            let x = x as f64;
            let s = 1.0 / (1.0 + (-x).exp());
            ((x * s) as f32, (s * (1.0 + x * (1.0 - s))) as f32)
        })
        .unzip()
}

/// The activations the model calls on the CPU (Flick's vectorised GELU and SiLU, through burn's
/// autodiff) and the trait's composed references, forward and gradient, against the textbook;
/// shapes of the MLP's hidden layer and a ragged one, values spread over ±9.
#[test]
fn cpu_activations_and_their_composed_references_match_the_textbook() {
    type Wrapper = fn(Tensor<3>) -> Tensor<3>;
    type Reference = fn(
        burn::backend::tensor::FloatTensor<Dispatch>,
    ) -> burn::backend::tensor::FloatTensor<Dispatch>;
    type ReferenceBwd = fn(
        burn::backend::tensor::FloatTensor<Dispatch>,
        burn::backend::tensor::FloatTensor<Dispatch>,
    ) -> burn::backend::tensor::FloatTensor<Dispatch>;
    type Textbook = fn(&[f32]) -> (Vec<f32>, Vec<f32>);
    let cases: [(&str, Wrapper, Reference, ReferenceBwd, Textbook); 2] = [
        (
            "GELU",
            flick_shaders::gelu::<3>,
            flick_shaders::ops::gelu_reference::<Dispatch>,
            flick_shaders::ops::gelu_bwd_reference::<Dispatch>,
            textbook_gelu,
        ),
        (
            "SiLU",
            flick_shaders::silu::<3>,
            flick_shaders::ops::silu_reference::<Dispatch>,
            flick_shaders::ops::silu_bwd_reference::<Dispatch>,
            textbook_silu,
        ),
    ];
    let ad = cpu().autodiff();
    for (name, wrapper, reference, reference_bwd, textbook) in cases {
        for (i, shape) in [[2, 256, 512], [3, 70, 33]].into_iter().enumerate() {
            let seed = 900 + 10 * i as u64;
            let x = random(shape, seed) * 3.0;
            let g = random(shape, seed + 1);
            let (xs, gs) = (values(x.clone()), values(g.clone()));
            let (y_ref, slope) = textbook(&xs);
            let dx_ref: Vec<f32> = slope.iter().zip(&gs).map(|(s, g)| s * g).collect();

            let xa = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
            let y = wrapper(xa.clone());
            let grads = (y.clone() * Tensor::from_data(g.to_data(), &ad))
                .sum()
                .backward();
            let dx = xa.grad(&grads).expect("x's gradient");
            let (dy, dd) = (rel_diff(&values(y), &y_ref), rel_diff(&values(dx), &dx_ref));
            assert!(dy < 1e-6, "CPU {name} {shape:?}: forward differs by {dy:e}");
            assert!(
                dd < 1e-6,
                "CPU {name} {shape:?}: gradient differs by {dd:e}"
            );

            let y = Tensor::<3>::from_dispatch(reference(x.clone().into_dispatch()));
            let dx =
                Tensor::<3>::from_dispatch(reference_bwd(x.into_dispatch(), g.into_dispatch()));
            let (dy, dd) = (rel_diff(&values(y), &y_ref), rel_diff(&values(dx), &dx_ref));
            assert!(
                dy < 1e-6,
                "composed {name} {shape:?}: forward differs by {dy:e}"
            );
            assert!(
                dd < 1e-6,
                "composed {name} {shape:?}: gradient differs by {dd:e}"
            );
        }
    }
}

/// The model's group norm on the CPU (Flick's two-pass rows, through burn's autodiff) and the
/// trait's composed references, forward and gradient, against the textbook in f64; the
/// pixel-resolution blocks' shape and a ragged one, values off-centre.
#[test]
fn cpu_group_norm_and_its_composed_reference_match_the_textbook() {
    let eps = 1e-6f32;
    let ad = cpu().autodiff();
    for (i, (shape, groups)) in [([2, 16, 4, 16, 16], 8), ([3, 6, 3, 5, 7], 2)]
        .into_iter()
        .enumerate()
    {
        let seed = 950 + 10 * i as u64;
        let x = random(shape, seed) * 2.0 + 0.7;
        let g = random(shape, seed + 1);
        let (xs, gs) = (values(x.clone()), values(g.clone()));
        let row = xs.len() / (shape[0] * groups);
        let (y_ref, dx_ref) = textbook_row_norm(&xs, &gs, row, eps);

        let xa = Tensor::<5>::from_data(x.to_data(), &ad).require_grad();
        let y = flick_shaders::group_norm(xa.clone(), groups, eps);
        let grads = (y.clone() * Tensor::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        let dx = xa.grad(&grads).expect("x's gradient");
        let (dy, dd) = (rel_diff(&values(y), &y_ref), rel_diff(&values(dx), &dx_ref));
        assert!(
            dy < 1e-5,
            "CPU group norm {shape:?}: forward differs by {dy:e}"
        );
        assert!(
            dd < 1e-5,
            "CPU group norm {shape:?}: gradient differs by {dd:e}"
        );

        let rows = [shape[0] * groups, row];
        let (y, stats) = Dispatch::fused_row_norm_fwd(x.clone().reshape(rows).into_dispatch(), eps);
        let (y, stats_ref) = (
            Tensor::<2>::from_dispatch(y),
            Tensor::<2>::from_dispatch(stats),
        );
        let ry = flick_shaders::ops::row_norm_fwd_reference::<Dispatch>(
            x.clone().reshape(rows).into_dispatch(),
            eps,
        );
        let (ry, rstats) = (
            Tensor::<2>::from_dispatch(ry.0),
            Tensor::<2>::from_dispatch(ry.1),
        );
        let rdx =
            Tensor::<2>::from_dispatch(flick_shaders::ops::row_norm_bwd_reference::<Dispatch>(
                x.reshape(rows).into_dispatch(),
                rstats.clone().into_dispatch(),
                g.reshape(rows).into_dispatch(),
            ));
        let (dy, dd) = (
            rel_diff(&values(ry), &y_ref),
            rel_diff(&values(rdx), &dx_ref),
        );
        assert!(
            dy < 1e-5,
            "composed group norm {shape:?}: forward differs by {dy:e}"
        );
        assert!(
            dd < 1e-5,
            "composed group norm {shape:?}: gradient differs by {dd:e}"
        );
        let ds = rel_diff(&values(stats_ref), &values(rstats));
        assert!(ds < 1e-5, "CPU and composed (mean, rstd) differ by {ds:e}");
        assert!(rel_diff(&values(y), &y_ref) < 1e-5);
    }
}

/// Every row of a squared-norm table built by `sumsq_into` sums to its tensor's Σx² (f64
/// textbook); rows not written stay as they were; tensors of any rank and of sizes below, at and
/// past a workgroup and past the kernel's 64 workgroups × 64 invocations.
fn sumsq_matches(device: &Device, composed: bool, what: &str) {
    let shapes: [&[usize]; 6] = [
        &[1],
        &[63],
        &[64, 300],
        &[4097],
        &[3, 5, 7, 9],
        &[2, 1, 3, 3, 3],
    ];
    let slots = flick_shaders::SUMSQ_SLOTS;
    // One row more than the tensors, filled with 7s: it must come back as it was.
    let rows = shapes.len() + 1;
    let mut init = vec![0.0f32; rows * slots];
    init[shapes.len() * slots..].fill(7.0);
    let mut table = Tensor::<1>::from_data(TensorData::new(init, [rows * slots]), device);
    let mut want = Vec::new();
    for (row, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = values(random([n], 900 + row as u64));
        want.push(x.iter().map(|&v| v as f64 * v as f64).sum::<f64>());
        let t = Tensor::<1>::from_data(TensorData::new(x, [n]), device);
        // Any rank: hand the kernel the tensor in its own shape.
        let raw = flick_shaders::reshape_any(t.into_dispatch(), shape);
        table = flick_shaders::sumsq_into(table, raw, row, composed);
    }
    let got = values(table);
    for (row, w) in want.iter().enumerate() {
        let s: f64 = got[row * slots..(row + 1) * slots]
            .iter()
            .map(|&v| v as f64)
            .sum();
        assert!(
            ((s - w) / w).abs() < 1e-5,
            "{what}: row {row} ({:?}) sums to {s}, Σx² = {w}",
            shapes[row]
        );
    }
    assert!(
        got[shapes.len() * slots..].iter().all(|&v| v == 7.0),
        "{what}: a row no tensor was written to changed"
    );
}

#[test]
fn sumsq_kernel_matches_the_textbook() {
    if let Some(gpu) = gpu_or_not_run("sumsq_kernel_matches_the_textbook") {
        let before = flick_shaders::kernel_launches();
        sumsq_matches(&gpu, false, "wgpu kernel");
        assert!(
            flick_shaders::kernel_launches() >= before + 6,
            "the sum-of-squares kernel did not run"
        );
        sumsq_matches(&gpu, true, "composed reference (wgpu)");
    }
    sumsq_matches(&cpu(), true, "composed reference (CPU)");
}

/// `t` `[B, H, N, dh]` on `device` laid out as `[B, N, H, dh]` (a linear layer's output split into
/// heads: axes 1 and 2 swapped, no copy), as the model hands it to the attention.
fn heads_interleaved(t: &Tensor<4>, device: &Device) -> Tensor<4> {
    let swapped = t.clone().swap_dims(1, 2);
    Tensor::<4>::from_data(swapped.to_data(), device).swap_dims(1, 2)
}

/// The attention kernels on operands with their heads interleaved (read and written in place,
/// no copies): the forward against the textbook, the backward against the same kernels on
/// stacked operands.
fn attention_interleaved_matches(device: &Device, what: &str) {
    for (i, &[b, h, nq, nk, dh]) in ATTENTION_SHAPES.iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (q, k, v) = (
            random([b, h, nq, dh], seed),
            random([b, h, nk, dh], seed + 1),
            random([b, h, nk, dh], seed + 2),
        );
        let bias = key_bias(b, nk, nk / 3, seed + 3);
        let g = random([b, h, nq, dh], seed + 4);
        let scale = 1.0 / (dh as f32).sqrt();
        let bias_d = || Tensor::<2>::from_data(bias.to_data(), device).into_dispatch();
        let il = |t: &Tensor<4>| heads_interleaved(t, device).into_dispatch();
        let (o, lse) = Dispatch::fused_attention_fwd(il(&q), il(&k), il(&v), bias_d(), scale);
        let (o, lse) = (
            Tensor::<4>::from_dispatch(o),
            Tensor::<3>::from_dispatch(lse),
        );
        let (o_ref, lse_ref) = textbook_attention(q.clone(), k.clone(), v.clone(), bias.clone());
        let (d_o, d_lse) = (
            rel_diff(&values(o.clone()), &values(o_ref)),
            rel_diff(&values(lse.clone()), &values(lse_ref)),
        );
        assert!(
            d_o < 1e-4 && d_lse < 1e-4,
            "{what}: interleaved attention {:?}: output differs by {d_o:e}, lse by {d_lse:e}",
            [b, h, nq, nk, dh]
        );
        // The backward from interleaved operands (o as the forward left it) against the stacked
        // path's.
        let got = Dispatch::fused_attention_bwd(
            il(&q),
            il(&k),
            il(&v),
            bias_d(),
            o.clone().into_dispatch(),
            lse.clone().into_dispatch(),
            il(&g),
            scale,
        );
        let stacked = Dispatch::fused_attention_bwd(
            to(&q, device).into_dispatch(),
            to(&k, device).into_dispatch(),
            to(&v, device).into_dispatch(),
            bias_d(),
            Tensor::<4>::from_data(o.to_data(), device).into_dispatch(),
            lse.into_dispatch(),
            to(&g, device).into_dispatch(),
            scale,
        );
        for (name, got, want) in [
            ("dq", got.0, stacked.0),
            ("dk", got.1, stacked.1),
            ("dv", got.2, stacked.2),
        ] {
            let (got, want) = (
                Tensor::<4>::from_dispatch(got),
                Tensor::<4>::from_dispatch(want),
            );
            assert_eq!(got.dims(), want.dims(), "{what}: {name} shape");
            let d = rel_diff(&values(got), &values(want));
            assert!(
                d < 1e-5,
                "{what}: interleaved attention {:?}: {name} differs from the stacked path's by {d:e}",
                [b, h, nq, nk, dh]
            );
        }
    }
}

#[test]
fn attention_kernels_read_and_write_interleaved_heads() {
    if let Some(gpu) = gpu_or_not_run("attention_kernels_read_and_write_interleaved_heads") {
        let _splits = SPLITS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before = flick_shaders::interleaved_attention_launches();
        for s in flick_shaders::SPLITS.iter().map(|&s| Some(s)).chain([None]) {
            flick_shaders::force_attention_splits(s);
            attention_interleaved_matches(&gpu, &format!("wgpu kernels, splits {s:?}"));
        }
        flick_shaders::force_attention_splits(None);
        // A forward and a backward per shape and split, each with interleaved operands.
        let runs = 2 * ATTENTION_SHAPES.len() * (flick_shaders::SPLITS.len() + 1);
        assert!(
            flick_shaders::interleaved_attention_launches() >= before + runs,
            "the kernels did not take the interleaved operands as they were"
        );
    }
}

/// A learned layer norm through the adaLN kernels (`layer_norm_affine`) against burn's
/// `LayerNorm` (with its default epsilon, as Flick's models use it): the output and the
/// gradients of the input, the scale and the shift.
#[test]
fn fused_layer_norm_matches_burns_module() {
    let Some(gpu) = gpu_or_not_run("fused_layer_norm_matches_burns_module") else {
        return;
    };
    let ad = gpu.clone().autodiff();
    for (i, &[b, n, d]) in ADALN_SHAPES.iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let x = random([b * n * d], seed).reshape([b, n, d]);
        let g = random([b * n * d], seed + 1).reshape([b, n, d]);
        let gamma = random([d], seed + 2) * 0.2 + 1.0;
        let beta = random([d], seed + 3) * 0.2;
        let mut norm = burn::nn::LayerNormConfig::new(d).init(&ad);
        norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(gamma.to_data(), &ad));
        norm.beta = Some(burn::module::Param::from_tensor(Tensor::from_data(
            beta.to_data(),
            &ad,
        )));
        let grads_of = |fused: bool| {
            let xa = Tensor::<3>::from_data(x.to_data(), &ad).require_grad();
            let y = if fused {
                flick_shaders::layer_norm_affine(
                    xa.clone(),
                    norm.gamma.val(),
                    norm.beta.as_ref().map(|b| b.val()),
                    1e-5,
                )
                .expect("the kernels apply on a GPU")
            } else {
                norm.forward(xa.clone())
            };
            let grads = (y.clone() * Tensor::from_data(g.to_data(), &ad))
                .sum()
                .backward();
            let gb = norm.beta.as_ref().unwrap().val().grad(&grads).unwrap();
            (
                values(y.inner()),
                values(xa.grad(&grads).unwrap()),
                values(norm.gamma.val().grad(&grads).unwrap()),
                values(gb),
            )
        };
        let (fused, burn) = (grads_of(true), grads_of(false));
        for (name, got, want, tol) in [
            ("output", &fused.0, &burn.0, 1e-4),
            ("input gradient", &fused.1, &burn.1, 1e-3),
            ("scale gradient", &fused.2, &burn.2, 1e-3),
            ("shift gradient", &fused.3, &burn.3, 1e-4),
        ] {
            let diff = rel_diff(got, want);
            assert!(
                diff < tol,
                "layer norm {:?}: {name} differs from burn's LayerNorm by {diff:e}",
                [b, n, d]
            );
        }
    }
}

/// The group norm's textbook per row of `row` values (f64): `y = (x − mean)/√(var + eps)` and
/// `dx = rstd·(g − mean(g) − y·mean(g·y))` for the output gradient `g`.
fn textbook_row_norm(xs: &[f32], gs: &[f32], row: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let (mut y_ref, mut dx_ref) = (Vec::new(), Vec::new());
    for (xr, gr) in xs.chunks(row).zip(gs.chunks(row)) {
        let n = row as f64;
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let y: Vec<f64> = xr.iter().map(|&v| (v as f64 - mean) * rstd).collect();
        let mg = gr.iter().map(|&v| v as f64).sum::<f64>() / n;
        let mgy = gr.iter().zip(&y).map(|(&g, y)| g as f64 * y).sum::<f64>() / n;
        dx_ref.extend(
            gr.iter()
                .zip(&y)
                .map(|(&g, y)| (rstd * (g as f64 - mg - y * mgy)) as f32),
        );
        y_ref.extend(y.iter().map(|&v| v as f32));
    }
    (y_ref, dx_ref)
}

/// The group norm on a GPU (the row-norm kernels, one launch forward and one backward, under
/// autodiff) against the textbook: rows shorter than a workgroup, and rows of many thousand.
#[test]
fn group_norm_kernels_match_the_textbook() {
    let Some(gpu) = gpu_or_not_run("group_norm_kernels_match_the_textbook") else {
        return;
    };
    let eps = 1e-6f32;
    let ad = gpu.clone().autodiff();
    let before = flick_shaders::kernel_launches();
    for (i, (shape, groups)) in [
        ([2, 16, 4, 16, 16], 8),
        ([3, 6, 3, 5, 7], 2),
        ([1, 4, 1, 3, 3], 4),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 980 + 10 * i as u64;
        let x = random(shape, seed) * 2.0 + 0.7;
        let g = random(shape, seed + 1);
        let row = x.dims().iter().product::<usize>() / (shape[0] * groups);
        let (y_ref, dx_ref) = textbook_row_norm(&values(x.clone()), &values(g.clone()), row, eps);
        let xa = Tensor::<5>::from_data(x.to_data(), &ad).require_grad();
        let y = flick_shaders::group_norm(xa.clone(), groups, eps);
        let grads = (y.clone() * Tensor::from_data(g.to_data(), &ad))
            .sum()
            .backward();
        let dx = xa.grad(&grads).expect("x's gradient");
        let (dy, dd) = (rel_diff(&values(y), &y_ref), rel_diff(&values(dx), &dx_ref));
        assert!(
            dy < 1e-5,
            "GPU group norm {shape:?}: forward differs by {dy:e}"
        );
        assert!(
            dd < 1e-4,
            "GPU group norm {shape:?}: gradient differs by {dd:e}"
        );
    }
    assert!(
        flick_shaders::kernel_launches() >= before + 6,
        "the row-norm kernels did not run"
    );
}

/// SiLU on a GPU (one kernel launch forward, one backward, under autodiff) against the
/// textbook, over values from −30 to 30 (the sigmoid's saturated ends included).
#[test]
fn silu_kernels_match_the_textbook() {
    let Some(gpu) = gpu_or_not_run("silu_kernels_match_the_textbook") else {
        return;
    };
    let ad = gpu.clone().autodiff();
    let n = 4099;
    let xs: Vec<f32> = (0..n)
        .map(|i| -30.0 + 60.0 * i as f32 / (n - 1) as f32)
        .collect();
    let gs = values(random([n], 990));
    let (y_ref, slope) = textbook_silu(&xs);
    let dx_ref: Vec<f32> = gs.iter().zip(&slope).map(|(g, s)| g * s).collect();
    let before = flick_shaders::kernel_launches();
    let xa = Tensor::<1>::from_data(TensorData::new(xs, [n]), &ad).require_grad();
    let y = flick_shaders::silu(xa.clone());
    let grads = (y.clone() * Tensor::from_data(TensorData::new(gs, [n]), &ad))
        .sum()
        .backward();
    let dx = xa.grad(&grads).expect("x's gradient");
    let (dy, dd) = (rel_diff(&values(y), &y_ref), rel_diff(&values(dx), &dx_ref));
    assert!(dy < 1e-5, "GPU SiLU: forward differs by {dy:e}");
    assert!(dd < 1e-5, "GPU SiLU: gradient differs by {dd:e}");
    assert!(
        flick_shaders::kernel_launches() >= before + 2,
        "the SiLU kernels did not run"
    );
}
