//! The distillation pipeline on `tiny`: teacher pairs → consistency init → APT (image stage, then
//! clip stage), plus the ablation losses; every stage's losses are finite and its checkpoints load
//! as one-step generators. Resuming the APT run continues from its checkpoint.

mod common;

use std::path::Path;

use burn::prelude::*;
use flick_core::distill::losses::GanLoss;
use flick_core::distill::pairs;
use flick_core::generate::Generator;
use flick_trainer::config::TeacherConfig;
use flick_trainer::distill::{AptArgs, DistillConfig, R1Kind, make_pairs, train_apt};
use flick_trainer::train::{TrainArgs, model_path, train_teacher};

fn metric(run: &Path, field: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{field} missing in {l}"))
        })
        .collect()
}

fn apt(
    cfg: &DistillConfig,
    teacher: &Path,
    init: &Path,
    out: &Path,
    resume: bool,
    stop_at: Option<u64>,
) {
    train_apt(AptArgs {
        cfg,
        teacher,
        init,
        out,
        resume,
        device: Device::flex(),
        replicas: flick_trainer::optim::Replicas::threads(2),
        stop_at,
        quiet: true,
    })
    .unwrap();
}

#[test]
fn pairs_consistency_and_apt_run_on_tiny() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(&dir.path().join("teacher"), 8);
    let cfg = DistillConfig::load(&common::root().join("configs/distill-tiny.toml")).unwrap();
    let device = Device::flex();

    // Pairs: 6 in shards of 4; a second call with the same settings completes, not redoes.
    let cache = dir.path().join("pairs");
    assert_eq!(
        make_pairs(&cfg.pairs, &teacher, &cache, &device, true).unwrap(),
        6
    );
    let all = pairs::read_all(&cache).unwrap();
    assert_eq!(all.shape, [6, 3, 4, 16, 16]);
    assert!(all.x.iter().all(|v| v.is_finite()) && all.captions.iter().all(|c| !c.is_empty()));
    // The teacher's own sampler reproduces a cached pair from its noise.
    let t = Generator::load(&teacher, &device).unwrap();
    let per = all.clip_len();
    let again: Vec<f32> = t
        .sample(
            &all.captions[5..6],
            all.z[5 * per..6 * per].to_vec(),
            2,
            2.0,
            |_, _| {},
        )
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let diff = again
        .iter()
        .zip(&all.x[5 * per..])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-4,
        "cached pair differs from the teacher's sample by {diff}"
    );
    let modified = std::fs::metadata(pairs::shard_path(&cache, 0))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        make_pairs(&cfg.pairs, &teacher, &cache, &device, true).unwrap(),
        6
    );
    assert_eq!(
        std::fs::metadata(pairs::shard_path(&cache, 0))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "a complete shard was made again"
    );
    // Other settings into the same cache: refused.
    let mut other = cfg.pairs.clone();
    other.guidance = 3.0;
    assert!(
        make_pairs(&other, &teacher, &cache, &device, true)
            .unwrap_err()
            .to_string()
            .contains("guidance")
    );

    // Consistency init.
    let cons = dir.path().join("consistency");
    common::consistency(&cfg, &teacher, &cache, &cons);
    let mse = metric(&cons, "loss");
    assert_eq!(mse.len(), 4);
    assert!(mse.iter().all(|v| v.is_finite()));
    let init = cons.join("generator.safetensors");
    let g = Generator::load(&init, &device).unwrap();
    assert_eq!((g.info.kind.as_str(), g.defaults().steps), ("generator", 1));
    assert!(
        cons.join("loss.png").exists() && cons.join("samples").read_dir().unwrap().count() == 1
    );

    // APT: two stages of two steps, interrupted after step 1 and resumed.
    let run = dir.path().join("apt");
    apt(&cfg, &teacher, &init, &run, false, Some(1));
    apt(&cfg, &teacher, &init, &run, true, None);
    for field in ["d_loss", "penalty", "logit_real", "logit_fake"] {
        let v = metric(&run, field);
        assert_eq!(v.len(), 4, "{field}: one line per step");
        assert!(v.iter().all(|x| x.is_finite()), "{field}: {v:?}");
    }
    // The clip stage's first step only trains the discriminator (d_warmup_steps = 1).
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let g: Vec<Option<f64>> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["g_loss"].as_f64())
        .collect();
    assert!(
        g[0].is_some() && g[1].is_some() && g[2].is_none() && g[3].is_some_and(f64::is_finite),
        "{g:?}"
    );
    assert!(
        metric(&run, "penalty").iter().any(|&p| p > 0.0),
        "approximate R1 never contributed"
    );
    for name in [
        "generator.safetensors",
        "generator-image.safetensors",
        "generator-clip.safetensors",
        "d_loss.png",
        "p_fake.png",
    ] {
        assert!(run.join(name).exists(), "{name} missing");
    }
    let g = Generator::load(&run.join("generator.safetensors"), &device).unwrap();
    assert_eq!(g.info.kind, "generator");
    let video = g
        .generate("a small green cross moving up on gray", 3, 1, 1.0)
        .unwrap();
    assert_eq!(video.frames, 4);

    // The ablation objectives run too (one step each): relativistic + R2, WGAN-GP, exact R1 (FD), no R1.
    for (loss, r1, r2) in [
        (GanLoss::Relativistic, R1Kind::Approx, 1000.0),
        (GanLoss::Wgan, R1Kind::None, 0.0),
        (GanLoss::NonSaturating, R1Kind::Fd, 0.0),
        (GanLoss::NonSaturating, R1Kind::None, 0.0),
    ] {
        let mut c = cfg.clone();
        c.apt.loss = loss;
        c.apt.r1 = r1;
        c.apt.r2_lambda = r2;
        c.sample_prompts.clear();
        let out = dir.path().join(format!("ablation-{loss:?}-{r1:?}"));
        apt(&c, &teacher, &init, &out, false, Some(1));
        let pen = metric(&out, "penalty");
        assert!(
            metric(&out, "d_loss")
                .iter()
                .chain(&pen)
                .all(|x| x.is_finite()),
            "{loss:?}/{r1:?}"
        );
        if r1 == R1Kind::None && loss != GanLoss::Wgan {
            assert_eq!(pen, vec![0.0]);
        } else {
            assert!(pen[0] > 0.0, "{loss:?}/{r1:?}: penalty {pen:?}");
        }
    }
}

#[test]
fn the_pipeline_distils_a_unet_teacher_and_refuses_a_nested_one() {
    // Pairs → consistency init → APT on the U-Net backbone (the discriminator on its taps).
    let dir = tempfile::tempdir().unwrap();
    let teacher_run = dir.path().join("teacher");
    let path = common::root().join("configs/teacher-unet-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.train.steps = 4;
    let nested_config = config.clone();
    train_teacher(TrainArgs {
        config,
        config_path: path.clone(),
        out: teacher_run.clone(),
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
    let teacher = model_path(&teacher_run);
    let mut cfg = DistillConfig::load(&common::root().join("configs/distill-tiny.toml")).unwrap();
    cfg.sample_prompts.clear();
    let device = Device::flex();
    let cache = dir.path().join("pairs");
    assert_eq!(
        make_pairs(&cfg.pairs, &teacher, &cache, &device, true).unwrap(),
        6
    );
    let cons = dir.path().join("consistency");
    common::consistency(&cfg, &teacher, &cache, &cons);
    let init = cons.join("generator.safetensors");
    let run = dir.path().join("apt");
    apt(&cfg, &teacher, &init, &run, false, Some(2));
    for field in ["d_loss", "penalty", "logit_real", "logit_fake"] {
        assert!(metric(&run, field).iter().all(|x| x.is_finite()), "{field}");
    }
    let g = Generator::load(&run.join("generator.safetensors"), &device).unwrap();
    assert_eq!(
        (g.info.kind.as_str(), g.model.kind()),
        ("generator", flick_core::model::BackboneKind::Unet)
    );
    assert_eq!(
        g.generate("a small green cross moving up on gray", 3, 1, 1.0)
            .unwrap()
            .frames,
        4
    );

    // A nested teacher: a clear refusal, not a wrong distillation.
    let mut nested = nested_config;
    nested.model.kind = flick_core::model::BackboneKind::Nested;
    nested.model.nested =
        flick_core::model::nested::NestedConfig::new().with_outer_channels(vec![8]);
    let nested_run = dir.path().join("nested");
    train_teacher(TrainArgs {
        config: nested,
        config_path: path,
        out: nested_run.clone(),
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
    let err = make_pairs(
        &cfg.pairs,
        &model_path(&nested_run),
        &dir.path().join("pairs-nested"),
        &device,
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("nested") && err.contains("not supported"),
        "{err}"
    );
}
