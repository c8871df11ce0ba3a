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
        workers: 2,
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
