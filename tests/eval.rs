//! `flick train-probe` and `flick eval` on tiny models: the probe trains and reloads, and the
//! eval writes its table, JSON, grids and chart, refusing adherence when the probe is not good
//! enough, with the real-clips row scoring better than a barely trained teacher.

mod common;

use flick::burn::prelude::*;
use flick_trainer::config::TeacherConfig;
use flick_trainer::eval::{EvalArgs, ModelSpec, run};
use flick_trainer::probe::{ProbeTrainConfig, model_path as probe_path, train_probe};
use flick_trainer::train::{TrainArgs, model_path, train_teacher};

#[test]
fn tiny_probe_trains_and_eval_writes_honest_tables() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();

    // Probe: trains (loss goes down), saves, reloads, reports held-out accuracy.
    let pcfg = ProbeTrainConfig::load(&common::root().join("configs/probe-tiny.toml")).unwrap();
    let probe_run = dir.path().join("probe");
    let acc = train_probe(
        &pcfg,
        &probe_run,
        false,
        &device,
        &flick_trainer::optim::Replicas::threads(2),
        true,
    )
    .unwrap();
    assert!(
        acc.contains_key("shape") && acc.contains_key("all"),
        "{acc:?}"
    );
    let losses: Vec<f64> = std::fs::read_to_string(probe_run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let (first, last) = (
        losses[..5].iter().sum::<f64>() / 5.0,
        losses[losses.len() - 5..].iter().sum::<f64>() / 5.0,
    );
    assert!(last < first, "probe loss did not go down: {first} → {last}");
    let (_, loaded_cfg, meta) = flick::eval::probe::load(&probe_path(&probe_run), &device).unwrap();
    assert_eq!(loaded_cfg, pcfg.probe);
    assert!(meta.contains_key("heldout_accuracy"));
    // A teacher checkpoint is not a probe.
    let teacher_run = dir.path().join("teacher");
    let path = common::root().join("configs/teacher-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.train.steps = 8;
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: teacher_run.clone(),
        resume: false,
        device: device.clone(),
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(1),
        init_from: None,
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    })
    .unwrap();
    let err = flick::eval::probe::load(&model_path(&teacher_run), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an attribute probe"), "{err}");

    // Eval: two rows plus the real clips.
    let out = dir.path().join("eval");
    let teacher = model_path(&teacher_run);
    let models = vec![
        ModelSpec {
            path: teacher.clone(),
            steps: 1,
            guidance: None,
            label: None,
        },
        ModelSpec {
            path: teacher,
            steps: 2,
            guidance: Some(1.0),
            label: None,
        },
    ];
    let rows = run(&EvalArgs {
        models,
        probe: probe_path(&probe_run),
        prompts: 4,
        seeds: 3,
        batch: 4,
        out: out.clone(),
        device,
        quiet: true,
    })
    .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].name, "real clips");
    assert!(rows.iter().all(|r| r.clips == 12));
    // A 40-step probe is far from 98%: adherence must be withheld, and the table says so.
    assert!(
        rows.iter()
            .all(|r| r.adherence.is_none() && r.all_correct.is_none())
    );
    let md = std::fs::read_to_string(out.join("eval.md")).unwrap();
    assert!(md.contains("Adherence not reported"), "{md}");
    // The flicker column: a second set of real clips scores about as the reference set does.
    assert!(md.contains("flicker"), "{md}");
    assert!(
        rows[0].flicker.is_some_and(|f| (0.3..3.0).contains(&f)),
        "real clips' flicker {:?}",
        rows[0].flicker
    );
    // The patch-grid column: real clips have no grid, so a second set scores ≈ 1.
    assert!(md.contains("patch grid"), "{md}");
    assert!(
        rows[0].patch_grid.is_some_and(|g| (0.5..2.0).contains(&g)),
        "real clips' patch grid {:?}",
        rows[0].patch_grid
    );
    // An 8-step teacher makes noise: farther from real clips than real clips are.
    for r in &rows[1..] {
        assert!(
            r.fd_probe > rows[0].fd_probe,
            "{} FD {} vs real {}",
            r.name,
            r.fd_probe,
            rows[0].fd_probe
        );
        assert!(r.seconds_per_clip.is_some_and(|s| s > 0.0));
    }
    for f in [
        "eval.json",
        "eval.png",
        "grid-real.png",
        "grid-1.png",
        "grid-2.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["probe_trusted"], false);
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);
}
