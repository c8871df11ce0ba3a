//! Data parallel over devices (`--devices`): two wgpu devices — two logical devices on the
//! machine's first adapter, each its own burn runtime, so the gradients really travel between
//! devices (host-staged) — give the same gradients and the same next weights as one device at the
//! same global batch, to 1e-5; a 20-step training curve started on two devices and resumed on one
//! matches the one-device curve. Under CI=true a missing wgpu adapter is a failure.

mod common;

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::Distribution;
use flick::device::{DeviceList, open_devices};
use flick::params::visit_params;
use flick_trainer::config::TeacherConfig;
use flick_trainer::optim::{AdamW, Replicas, TRANSFER_NANOS, data_parallel_grads};

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn params<M: Module>(m: &M) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    visit_params(m, |path, _, v, _| {
        out.insert(path.to_string(), host(v));
    });
    out
}

#[test]
fn two_devices_train_like_one() {
    let devices = match open_devices(&DeviceList::Indices(vec![0, 0])) {
        Ok(d) => d,
        Err(e) => return common::unavailable(&format!("a wgpu adapter ({e})")),
    };
    let (d0, d1) = (devices[0].0.clone(), devices[1].0.clone());
    assert!(d0 != d1, "the second replica is not a device of its own");

    // ---- One step: gradients and next weights.
    let mut cfg = TeacherConfig::load(&common::root().join("configs/teacher-tiny.toml")).unwrap();
    let mc = cfg.model.clone();
    let ad = d0.clone().autodiff();
    ad.seed(3);
    // Random weights everywhere (zero-initialised layers would hide most of the network).
    let model = flick::params::map_params(mc.init(&ad), |_, _, p, _| {
        Some(p.clone().random_like(Distribution::Normal(0.0, 0.2)))
    });
    let b = 4;
    let shape = [b, 3, mc.frames, mc.height, mc.width];
    let per: usize = shape[1..].iter().product();
    let random = |dist| host(Tensor::<5>::random(shape, dist, &d0).reshape([b * per]));
    let x0 = random(Distribution::Uniform(-1.0, 1.0));
    let eps = random(Distribution::Normal(0.0, 1.0));
    let times: Vec<f32> = vec![0.2, 0.45, 0.7, 0.95];
    let prompts: Vec<String> = [
        "a large red circle moving left on black",
        "a small yellow square moving up on navy",
        "",
        "a large white cross falling on dark green",
    ]
    .map(String::from)
    .to_vec();
    let loss_of = |local: &flick::model::Backbone, lo: usize, hi: usize, dev: &Device| {
        let n = hi - lo;
        let sh = [n, shape[1], shape[2], shape[3], shape[4]];
        let rows = |v: &[f32]| {
            Tensor::<5>::from_data(TensorData::new(v[lo * per..hi * per].to_vec(), sh), dev)
        };
        let t = Tensor::<1>::from_data(TensorData::new(times[lo..hi].to_vec(), [n]), dev);
        let text = local.encode_text(&prompts[lo..hi], dev);
        local.flow_loss(rows(&x0), vec![rows(&eps)], t, &text)
    };
    let one_dev = Replicas::Devices(vec![d0.clone()]).shares(&ad);
    let two_dev = Replicas::Devices(vec![d0.clone(), d1.clone()]).shares(&ad);
    let (loss1, g1) = data_parallel_grads(&model, b, &one_dev, loss_of);
    let (loss2, g2) = data_parallel_grads(&model, b, &two_dev, loss_of);
    let moved = TRANSFER_NANOS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(moved > 0, "no gradient travelled from the second device");
    assert!(
        ((loss1 - loss2) / loss1).abs() < 1e-5,
        "loss: one device {loss1}, two {loss2}"
    );
    assert_eq!(g1.len(), g2.len());
    assert_eq!(
        g1.len(),
        params(&model).len(),
        "a parameter without gradient"
    );
    // Relative to the largest gradient of the whole vector: a parameter whose gradient is zero
    // in exact arithmetic (the keys' bias: softmax ignores a constant added to every key) holds
    // only rounding noise, which per tensor would read as a large relative difference.
    let scale = g1
        .values()
        .flat_map(|g| host(g.clone()))
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = (0f32, String::new());
    for (path, a) in &g1 {
        let (a, b) = (host(a.clone()), host(g2[path].clone()));
        assert!(b.iter().all(|v| v.is_finite()));
        let d = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        if d > worst.0 {
            worst = (d, path.clone());
        }
    }
    eprintln!("gradients, two devices vs one: worst difference / largest gradient {worst:?}");
    assert!(worst.0 <= 1e-5, "gradients differ: {worst:?}");
    let next = |grads| {
        let mut opt = AdamW::new(0.9, 0.99, 1e-8, 0.0);
        params(&opt.step_with(model.clone(), grads, 1e-3, 1.0).0)
    };
    let (w1, w2) = (next(&g1), next(&g2));
    // Adam's first step is lr·g/(|g| + ε) ≈ lr·sign(g): where a gradient is rounding noise (zero
    // in exact arithmetic, like the keys' bias) a last-bit difference flips the step. Those
    // elements (|g| below 1e-5 of the largest gradient) may differ by up to 2·lr; every other
    // element must agree to 1e-5.
    let (mut worst, mut noisy, mut total) = (0f32, 0usize, 0usize);
    for (p, a) in &w1 {
        let g = host(g1[p].clone());
        let wscale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for ((x, y), g) in a.iter().zip(&w2[p]).zip(&g) {
            total += 1;
            if g.abs() < 1e-5 * scale {
                noisy += usize::from(*g != 0.0);
                assert!((x - y).abs() <= 2.0 * 1e-3 + 1e-6, "{p}: {x} vs {y}");
            } else {
                worst = worst.max((x - y).abs() / wscale);
            }
        }
    }
    eprintln!(
        "next weights (AdamW), two devices vs one: worst relative difference {worst:e} ({noisy} of {total} elements with small nonzero gradients)"
    );
    assert!(worst <= 1e-5, "next weights differ by {worst}");
    // The same two shares on one device: what the devices add is the transfer (exact) and their
    // own kernels (autotuned per device, so the rounding of a matmul may differ).
    let same_dev = Replicas::Devices(vec![d0.clone(), d0.clone()]).shares(&ad);
    let (loss3, g3) = data_parallel_grads(&model, b, &same_dev, loss_of);
    assert!(((loss3 - loss2) / loss2).abs() < 1e-6, "{loss3} vs {loss2}");
    let worst = g3
        .iter()
        .map(|(p, g)| {
            host(g.clone())
                .iter()
                .zip(host(g2[p].clone()))
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        })
        .fold(0f32, f32::max)
        / scale;
    eprintln!("gradients, two devices vs the same two shares on one: {worst:e} of the largest");
    assert!(worst <= 1e-6, "{worst}");

    // ---- 20 steps of train-teacher: one device, and two devices for 10 steps resumed on one.
    (cfg.train.steps, cfg.train.batch_size) = (20, 4);
    (cfg.train.log_every, cfg.train.checkpoint_every) = (1, 10);
    let dir = tempfile::tempdir().unwrap();
    let train = |out: &std::path::Path, list: Vec<Device>, resume, stop_at| {
        flick_trainer::train::train_teacher(flick_trainer::train::TrainArgs {
            config: cfg.clone(),
            config_path: common::root().join("configs/teacher-tiny.toml"),
            out: out.to_path_buf(),
            resume,
            device: d0.clone(),
            stop_at,
            quiet: true,
            replicas: Replicas::Devices(list),
            init_from: None,
            init_reset: vec![],
            time_budget: None,
            profile_every: None,
        })
        .unwrap();
    };
    let (single, split) = (dir.path().join("one"), dir.path().join("two-then-one"));
    train(&single, vec![d0.clone()], false, None);
    train(&split, vec![d0.clone(), d1.clone()], false, Some(10));
    train(&split, vec![d0.clone()], true, None);
    let (a, b) = (common::losses(&single), common::losses(&split));
    assert_eq!((a.len(), b.len()), (20, 20));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) / x).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "20-step loss curve, two devices (then one) vs one: worst relative difference {worst:e}"
    );
    eprintln!("one device: {a:?}\ntwo, then one: {b:?}");
    assert!(worst <= 1e-5, "the loss curves differ by {worst}");
}
