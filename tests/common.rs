//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Under CI a missing capability is a failure; elsewhere the test says loudly that it did not run.
pub fn unavailable(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} is unavailable, and CI=true requires it (run scripts/setup.sh)");
    }
    eprintln!("\n*** NOT RUN: {what} is unavailable on this machine (CI=true would fail) ***\n");
}

/// The `loss` column of a run's metrics.jsonl.
pub fn losses(run: &std::path::Path) -> Vec<f32> {
    flick_trainer::run::column(run, "loss")
        .into_iter()
        .map(|(_, l)| l as f32)
        .collect()
}

/// Train `configs/teacher-tiny.toml` for `steps` steps on the CPU into `out`; returns the
/// teacher checkpoint.
pub fn tiny_teacher(out: &std::path::Path, steps: u64) -> PathBuf {
    use flick_trainer::config::TeacherConfig;
    let mut config = TeacherConfig::load(&root().join("configs/teacher-tiny.toml")).unwrap();
    config.train.steps = steps;
    train_tiny(&config, out, false, None).unwrap();
    flick_trainer::train::model_path(out)
}

/// `train-teacher` in-process on the CPU (2 workers, quiet) with `config` (a changed
/// `teacher-tiny.toml`), into `out`.
pub fn train_tiny(
    config: &flick_trainer::config::TeacherConfig,
    out: &std::path::Path,
    resume: bool,
    stop_at: Option<u64>,
) -> anyhow::Result<()> {
    train_tiny_on(
        config,
        out,
        resume,
        stop_at,
        burn::prelude::Device::flex(),
        flick_trainer::optim::Replicas::threads(2),
    )
}

/// [`train_tiny`] on `device` with `replicas`.
pub fn train_tiny_on(
    config: &flick_trainer::config::TeacherConfig,
    out: &std::path::Path,
    resume: bool,
    stop_at: Option<u64>,
    device: burn::prelude::Device,
    replicas: flick_trainer::optim::Replicas,
) -> anyhow::Result<()> {
    use flick_trainer::train::{TrainArgs, train_teacher};
    train_teacher(TrainArgs {
        config: config.clone(),
        config_path: root().join("configs/teacher-tiny.toml"),
        out: out.to_path_buf(),
        resume,
        device,
        stop_at,
        quiet: true,
        replicas,
        init_from: None,
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    })
    .map(|_| ())
}

/// `distill consistency` in-process on the CPU (2 workers, quiet), from `pairs` into `out`.
pub fn consistency(
    cfg: &flick_trainer::distill::DistillConfig,
    teacher: &std::path::Path,
    pairs: &std::path::Path,
    out: &std::path::Path,
) {
    flick_trainer::distill::train_consistency(
        cfg,
        teacher,
        pairs,
        out,
        false,
        &burn::prelude::Device::flex(),
        &flick_trainer::optim::Replicas::threads(2),
        None,
        true,
    )
    .unwrap();
}
