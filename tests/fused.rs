//! The whole model on a GPU with Flick's fused kernels on and off (`--no-fused`): the same
//! output, and the same gradient for every parameter. (One test in its own process, because the
//! switch is process-wide.) Under CI=true a missing wgpu adapter is a failure.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use flick::params::grads_by_path;
use flick_trainer::config::TeacherConfig;

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn model_forward_and_gradients_agree_with_kernels_on_and_off() {
    let gpu = match flick::device::open(flick::device::BackendKind::Wgpu) {
        Ok(d) => d,
        Err(e) => return common::unavailable(&format!("a wgpu adapter ({e})")),
    };
    // Both backbones: the DiT (attention, adaLN, pixel-resolution convolutions) and the U-Net
    // (per-frame convolutions at every level, temporal and space-time attention).
    for config in [
        "configs/teacher-tiny.toml",
        "configs/teacher-unet-tiny.toml",
    ] {
        let mut cfg = TeacherConfig::load(&common::root().join(config))
            .unwrap()
            .model;
        if cfg.kind != flick::model::BackboneKind::Dit {
            // Convolutions at every level are slow on a CPU rasteriser: 2 frames of 8×8.
            (cfg.frames, cfg.height, cfg.width) = (2, 8, 8);
        }
        let (width, heads) = match cfg.kind {
            flick::model::BackboneKind::Dit => (cfg.dim, cfg.heads),
            _ => (cfg.unet.channels[0], cfg.unet.heads),
        };
        let dh = (width / heads) as u32;
        assert!(
            flick_shaders::HEAD_DIMS.contains(&dh),
            "{config}: head width {dh} would not use the attention kernel"
        );
        agree_with_kernels_on_and_off(&gpu, &cfg);
    }
}

fn agree_with_kernels_on_and_off(gpu: &Device, cfg: &flick::model::ModelConfig) {
    let ad = gpu.clone().autodiff();
    ad.seed(3);
    // Random weights everywhere (the zero-initialised adaLN-Zero and head layers would hide the
    // attention and norm paths).
    let model = flick::params::map_params(cfg.init(&ad), |_, _, p, _| {
        Some(p.clone().random_like(Distribution::Normal(0.0, 0.2)))
    });
    let shape = [2, 3, cfg.frames, cfg.height, cfg.width];
    let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    let target = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
    let t = Tensor::<1>::from_floats([0.3, 0.8], &ad);
    let prompts = [
        "a small red circle moving left on black".to_string(),
        "".to_string(),
    ];

    let run = |fused: bool| {
        flick_shaders::set_fused(fused);
        let before = flick_shaders::kernel_launches();
        let text = model.encode_text(&prompts, &ad);
        let out = model.forward(x.clone(), t.clone(), &text);
        let loss = (out.clone() - target.clone()).powi_scalar(2).mean();
        let grads = loss.backward();
        let mut by_path: Vec<(String, Vec<f32>)> = grads_by_path(&model, &grads)
            .into_iter()
            .map(|(k, g)| (k, g.into_data().try_to_vec::<f32>().unwrap()))
            .collect();
        by_path.sort_by(|a, b| a.0.cmp(&b.0));
        let out = out.into_data().try_to_vec::<f32>().unwrap();
        let launched = flick_shaders::kernel_launches() - before;
        // Kernels on: attention and adaLN forward and backward ran as WGSL kernels; off: none.
        assert_eq!(
            launched > 0,
            fused,
            "{launched} WGSL kernels launched with fused = {fused}"
        );
        (out, by_path)
    };
    let (out_on, grads_on) = run(true);
    let (out_off, grads_off) = run(false);
    flick_shaders::set_fused(true);

    assert!(out_on.iter().any(|v| v.abs() > 0.05), "trivial output");
    let d = rel_diff(&out_on, &out_off);
    assert!(
        d < 1e-4,
        "model output with kernels on vs off differs by {d:e}"
    );
    assert_eq!(grads_on.len(), grads_off.len());
    assert!(
        grads_on.len() > 20,
        "only {} parameters have gradients",
        grads_on.len()
    );
    for ((path, on), (_, off)) in grads_on.iter().zip(&grads_off) {
        let d = rel_diff(on, off);
        assert!(
            d < 2e-3,
            "gradient of {path} with kernels on vs off differs by {d:e}"
        );
    }
}
