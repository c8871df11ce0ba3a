//! Every backbone through the same teacher command: a few dozen `tiny` training steps with a
//! loss that goes down, a checkpoint that reloads as the same backbone, and clips generated
//! from it.

mod common;

use flick::burn::prelude::*;
use flick::generate::Generator;
use flick::model::BackboneKind;
use flick_trainer::config::TeacherConfig;
use flick_trainer::train::{TrainArgs, model_path, train_teacher};

use common::losses;

/// Train `config` for 60 steps, check the loss went down, reload the checkpoint and generate.
fn trains_reloads_and_generates(
    config: TeacherConfig,
    path: std::path::PathBuf,
    kind: BackboneKind,
) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut config = config;
    config.train.steps = 60;
    config.train.log_every = 1;
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: run.clone(),
        resume: false,
        device: Device::flex(),
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(2),
        init_from: None,
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    })
    .unwrap();

    let l = losses(&run);
    assert_eq!(l.len(), 60);
    assert!(l.iter().all(|v| v.is_finite()));
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[50..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.8 * first,
        "{kind:?}: loss did not go down: first 10 mean {first}, last 10 mean {last}"
    );

    let g = Generator::load(&model_path(&run), &Device::flex()).unwrap();
    assert_eq!(g.info.config.kind, kind);
    assert_eq!(g.model.kind(), kind);
    let video = g
        .generate("a large red circle moving left on black", 7, 3, 2.0)
        .unwrap();
    assert_eq!((video.frames, video.height, video.width), (4, 16, 16));
    assert_eq!(
        video,
        g.generate("a large red circle moving left on black", 7, 3, 2.0)
            .unwrap()
    );
    assert_ne!(
        video,
        g.generate("a large red circle moving left on black", 8, 3, 2.0)
            .unwrap()
    );
}

#[test]
fn the_unet_trains_reloads_and_generates() {
    let path = common::root().join("configs/teacher-unet-tiny.toml");
    let config = TeacherConfig::load(&path).unwrap();
    assert_eq!(config.model.kind, BackboneKind::Unet);
    trains_reloads_and_generates(config, path, BackboneKind::Unet);
}

#[test]
fn the_nested_unet_trains_reloads_and_generates() {
    // The tiny U-Net as the inner network at 8×8 inside one 16×16 outer level.
    let path = common::root().join("configs/teacher-unet-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.model.kind = BackboneKind::Nested;
    config.model.nested = flick::model::nested::NestedConfig::new()
        .with_outer_channels(vec![8])
        .with_loss_weights(vec![1.0, 1.0]);
    config.model.validate().unwrap();
    assert_eq!(config.model.level_sizes(), vec![[16, 16], [8, 8]]);
    trains_reloads_and_generates(config, path, BackboneKind::Nested);
}

/// Progressive training of the nested U-Net, through the teacher command: the inner U-Net alone
/// at 8×8 (`outer_channels = []`, as `configs/teacher-nested-inner.toml` at 16×16), then the
/// 16×16 outer level grown around it with `init_from` the inner run's state. The grown model
/// starts as the inner one: with the inner run's weights and a fresh outer level, its inner-level
/// prediction is the inner model's, bit for bit, whatever the full-size input.
#[test]
fn progressive_training_grows_the_inner_unet_into_the_nested_one() {
    use flick::checkpoint::{load_model, load_module_partial, read_safetensors};
    use flick::model::nested::NestedConfig;
    let path = common::root().join("configs/teacher-unet-tiny.toml");
    let base = TeacherConfig::load(&path).unwrap();
    let mut inner_cfg = base.clone();
    inner_cfg.model.kind = BackboneKind::Nested;
    (inner_cfg.model.height, inner_cfg.model.width) = (8, 8);
    inner_cfg.model.nested = NestedConfig::new()
        .with_outer_channels(vec![])
        .with_loss_weights(vec![1.0]);
    inner_cfg.train.steps = 60;
    inner_cfg.train.log_every = 1;
    let mut grown_cfg = inner_cfg.clone();
    (grown_cfg.model.height, grown_cfg.model.width) = (16, 16);
    grown_cfg.model.nested = NestedConfig::new()
        .with_outer_channels(vec![8])
        .with_loss_weights(vec![1.0, 1.0]);
    grown_cfg.model.validate().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (inner_run, grown_run) = (dir.path().join("inner"), dir.path().join("grown"));
    let args = |config: TeacherConfig, out: std::path::PathBuf, stop_at, init_from| TrainArgs {
        config,
        config_path: path.clone(),
        out,
        resume: false,
        device: Device::flex(),
        stop_at,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(2),
        init_from,
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    };
    // Stage 1: the inner alone, 30 of the 60 steps.
    train_teacher(args(inner_cfg, inner_run.clone(), Some(30), None)).unwrap();
    let inner_losses = losses(&inner_run);
    assert_eq!(inner_losses.len(), 30);

    // The grown model from the inner run's weights: its inner level is the inner model.
    let device = Device::flex();
    let (inner, _) = load_model(&model_path(&inner_run), &device).unwrap();
    let (tensors, _) = read_safetensors(&model_path(&inner_run)).unwrap();
    let (grown, fresh) =
        load_module_partial(grown_cfg.model.init(&device), &tensors, "", &device, &[]).unwrap();
    assert!(!fresh.is_empty());
    assert!(
        fresh.iter().all(|p| p.starts_with("outer.")),
        "only the outer level is new: {fresh:?}"
    );
    let prompts = vec!["a large red circle moving left on black".to_string(); 2];
    let text = grown.encode_text(&prompts, &device);
    let t = Tensor::<1>::from_floats([0.3, 0.8], &device);
    let small = Tensor::<5>::random(
        [2, 3, 4, 8, 8],
        flick::burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    for seed in [1.0f32, -2.0] {
        let full = Tensor::<5>::ones([2, 3, 4, 16, 16], &device) * seed;
        let v = grown.forward_levels(vec![full, small.clone()], t.clone(), &text);
        let t1 = Tensor::<1>::from_floats(
            [grown.level_time(0.3, 1), grown.level_time(0.8, 1)],
            &device,
        );
        let alone = inner.forward(small.clone(), t1, &inner.encode_text(&prompts, &device));
        let diff: f32 = (v[1].clone() - alone).abs().max().into_scalar();
        assert!(
            diff < 1e-5,
            "grown inner level differs from the inner model by {diff}"
        );
    }

    // Stage 2: the grown model trains on from the inner run's state (steps 30 → 60).
    train_teacher(args(
        grown_cfg,
        grown_run.clone(),
        None,
        Some(inner_run.join("state.safetensors")),
    ))
    .unwrap();
    let l = losses(&grown_run);
    assert_eq!(
        l.len(),
        60,
        "the grown run carries the inner run's curve and adds 30 steps"
    );
    assert_eq!(
        &l[..30],
        &inner_losses[..],
        "the carried curve is the inner run's"
    );
    assert!(l[30..].iter().all(|v| v.is_finite()));
    let g = Generator::load(&model_path(&grown_run), &Device::flex()).unwrap();
    let video = g
        .generate("a large red circle moving left on black", 7, 3, 2.0)
        .unwrap();
    assert_eq!((video.frames, video.height, video.width), (4, 16, 16));
}
