//! Flick's models against their PyTorch twin (`scripts/torch_twin/`): for every backbone (the
//! DiT in two variants, the U-Net, the nested U-Net, and the bundled teacher with its trained
//! weights) Flick writes its checkpoint, fixed inputs and what it computes from them — the
//! velocity at every resolution, the flow-matching loss on a fixed batch and every parameter's
//! gradient — and the twin, loading the checkpoint by tensor name, must agree: outputs within
//! 1e-4, loss and global gradient norm within 1e-3 relative, the whole gradient vector within
//! 1e-3 of its norm (CPU, f32).
//!
//! The twin needs PyTorch (`scripts/setup.sh test` installs it in `~/.cache/flick/torch-venv`;
//! `$FLICK_TORCH_PYTHON` names another interpreter). Without it the test says NOT RUN — and
//! fails under `CI=true`, where it must run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use flick_core::checkpoint::{NamedTensors, save_model, write_safetensors};
use flick_core::model::{Backbone, ModelConfig};
use flick_core::params::{grads_by_path, map_params};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The interpreter with PyTorch, or why there is none.
fn torch_python() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("FLICK_TORCH_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/flick/torch-venv/bin/python"))
            .into_iter()
            .collect(),
    };
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import torch, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(py.clone());
        }
    }
    Err(format!(
        "no Python with PyTorch and safetensors (looked at {candidates:?}; `bash scripts/setup.sh test` installs one, or set FLICK_TORCH_PYTHON)"
    ))
}

fn put(out: &mut NamedTensors, name: &str, t: Tensor<1>, shape: &[usize]) {
    let data: Vec<f32> = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    out.insert(name.to_string(), (shape.to_vec(), data));
}

fn put5(out: &mut NamedTensors, name: &str, t: Tensor<5>) {
    let shape = t.dims();
    let n: usize = shape.iter().product();
    put(out, name, t.reshape([n]), &shape);
}

/// Write one case: the checkpoint, the inputs and Flick's results, into `dir/<name>.*`.
fn write_case(dir: &Path, name: &str, cfg: &ModelConfig, model: Backbone, ad: &Device) {
    save_model(
        &dir.join(format!("{name}.model.safetensors")),
        &model,
        "teacher",
        cfg,
        &BTreeMap::new(),
    )
    .unwrap();
    let prompts: Vec<String> = vec![
        "a large red circle moving left on black".into(),
        "".into(),
        "a small cyan triangle orbiting clockwise on gray".into(),
    ];
    let b = prompts.len();
    let frames = cfg.frames;
    let normal = |shape: [usize; 5]| {
        Tensor::<5>::random(
            shape,
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &Device::flex(),
        )
    };
    let levels = model.levels();
    let sizes = cfg.level_sizes();
    let mut fx = NamedTensors::new();

    // The velocity at every resolution for fixed noisy inputs.
    let xs: Vec<Tensor<5>> = sizes
        .iter()
        .map(|&[h, w]| normal([b, 3, frames, h, w]))
        .collect();
    let t = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.85, 0.02], [b]), ad);
    let text = model.encode_text(&prompts, ad);
    let outs = model.forward_levels(
        xs.iter()
            .map(|x| Tensor::from_data(x.to_data(), ad))
            .collect(),
        t.clone(),
        &text,
    );
    assert_eq!(outs.len(), levels);
    for (r, (x, v)) in xs.into_iter().zip(outs).enumerate() {
        put5(&mut fx, &format!("x.{r}"), x);
        put5(&mut fx, &format!("out.{r}"), v.inner());
    }
    put(&mut fx, "t", t.inner(), &[b]);

    // The flow-matching loss and its gradients on a fixed batch.
    let [h, w] = sizes[0];
    let x0 = normal([b, 3, frames, h, w]).clamp(-1.0, 1.0);
    let eps: Vec<Tensor<5>> = sizes
        .iter()
        .map(|&[h, w]| normal([b, 3, frames, h, w]))
        .collect();
    let tl = Tensor::<1>::from_data(TensorData::new(vec![0.2f32, 0.7, 0.95], [b]), ad);
    let loss = model.flow_loss(
        Tensor::from_data(x0.to_data(), ad),
        eps.iter()
            .map(|e| Tensor::from_data(e.to_data(), ad))
            .collect(),
        tl.clone(),
        &model.encode_text(&prompts, ad),
    );
    let loss_value: f32 = loss.clone().into_scalar();
    let grads = grads_by_path(&model, &loss.backward());
    let mut sq = 0f64;
    for (path, g) in grads {
        let n = g.dims()[0];
        let v: Vec<f32> = g
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        sq += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        put(&mut fx, &format!("grad.{path}"), g, &[n]);
    }
    put5(&mut fx, "x0", x0);
    for (r, e) in eps.into_iter().enumerate() {
        put5(&mut fx, &format!("eps.{r}"), e);
    }
    put(&mut fx, "t_loss", tl.inner(), &[b]);
    let mut meta = BTreeMap::new();
    meta.insert("prompts".into(), serde_json::to_string(&prompts).unwrap());
    meta.insert("loss".into(), format!("{loss_value:e}"));
    meta.insert("grad_norm".into(), format!("{:e}", sq.sqrt()));
    meta.insert("levels".into(), levels.to_string());
    write_safetensors(&dir.join(format!("{name}.case.safetensors")), &fx, meta).unwrap();
}

/// Every parameter moved off its initialisation (zero-initialised gates and heads included), so
/// that no term of the forward pass is hidden behind a zero.
fn randomised(model: Backbone) -> Backbone {
    map_params(model, |_, _, p, shape| {
        let n: usize = shape.iter().product();
        let noise = Tensor::<1>::random(
            [n],
            burn::tensor::Distribution::Normal(0.0, 0.05),
            &p.device(),
        );
        Some(p + noise)
    })
}

fn config(json: serde_json::Value) -> ModelConfig {
    let cfg = ModelConfig::from_value(json).unwrap();
    cfg.validate().unwrap();
    cfg
}

#[test]
fn pytorch_twin_computes_what_flick_computes() {
    let python = match torch_python() {
        Ok(p) => p,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the PyTorch twin must run in CI: {why}")
        }
        Err(why) => {
            eprintln!("NOT RUN: pytorch_twin_computes_what_flick_computes — {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let ad = Device::flex().autodiff();
    let text =
        serde_json::json!({"max_len": 24, "dim": 32, "depth": 1, "heads": 2, "conv_kernel": 5});
    let small_text =
        serde_json::json!({"max_len": 24, "dim": 16, "depth": 1, "heads": 2, "conv_kernel": 3});
    let cases = [
        (
            "dit-conv",
            config(serde_json::json!({
                "frames": 4, "height": 16, "width": 16, "patch": [2, 4, 4], "dim": 32, "depth": 2,
                "heads": 2, "stem_channels": 8, "head_modulation": true, "conv_blocks": 1,
                "attention": "factorised", "text": text,
            })),
        ),
        (
            "dit-linear-clean",
            config(serde_json::json!({
                "frames": 2, "height": 8, "width": 16, "patch": [1, 4, 4], "dim": 32, "depth": 1,
                "heads": 4, "stem_channels": 0, "prediction": "clean", "sigma_data": 0.5,
                "text": {"max_len": 16, "dim": 16, "depth": 2, "heads": 2},
            })),
        ),
        (
            "unet",
            config(serde_json::json!({
                "kind": "unet", "frames": 4, "height": 16, "width": 16, "text": small_text,
                "unet": {"channels": [8, 16], "blocks": 2, "temporal_attention_levels": 1,
                         "mid_blocks": 2, "heads": 2, "cond_dim": 16},
            })),
        ),
        (
            "nested",
            config(serde_json::json!({
                "kind": "nested", "frames": 2, "height": 32, "width": 32, "text": small_text,
                "unet": {"channels": [8, 16], "blocks": 1, "temporal_attention_levels": 2,
                         "mid_blocks": 1, "heads": 2, "cond_dim": 16},
                "nested": {"outer_channels": [8, 12], "loss_weights": [1.0, 0.5, 0.25], "snr_power": 1.0},
            })),
        ),
    ];
    let mut names = Vec::new();
    for (name, cfg) in cases {
        write_case(dir.path(), name, &cfg, randomised(cfg.init(&ad)), &ad);
        names.push(name.to_string());
    }
    // The bundled teacher with its trained weights.
    let bundled = repo().join("models/teacher-small.safetensors");
    let (model, info) = flick_core::checkpoint::load_model(&bundled, &ad).unwrap();
    write_case(dir.path(), "bundled-teacher", &info.config, model, &ad);
    names.push("bundled-teacher".into());

    let out = Command::new(&python)
        .arg(repo().join("scripts/torch_twin/check.py"))
        .arg(dir.path())
        .args(&names)
        .output()
        .expect("run the twin's check");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the PyTorch twin disagrees with Flick (see above)"
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        names.len(),
        "every case must be checked"
    );
}
