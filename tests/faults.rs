//! The non-finite guard of every training loop, on real `tiny` runs: a step whose gradient is
//! made non-finite (the testing hook `run::inject_nonfinite`) is skipped — weights, optimiser
//! moments and EMA exactly as they were — counted in the metrics and the run goes on;
//! non-finite steps in a row stop the run with an error that names the last good checkpoint,
//! which loads and resumes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use flick_core::checkpoint::read_safetensors;
use flick_trainer::config::TeacherConfig;
use flick_trainer::distill::{AptArgs, DistillConfig, make_pairs, train_apt};
use flick_trainer::dmd::{DmdArgs, train_dmd};
use flick_trainer::run::{clear_nonfinite, inject_nonfinite};

/// The tests here compare runs bit for bit; burn's CPU backend splits its parallel reductions
/// by what its thread pool is doing, so two of them training side by side can round differently.
/// They take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `tiny` teacher run on `on` (the CPU with two workers, or a GPU with one).
fn teacher(
    cfg: &TeacherConfig,
    out: &Path,
    resume: bool,
    stop_at: Option<u64>,
    on: &Device,
) -> anyhow::Result<()> {
    let replicas = if on.identity().is_some() {
        flick_trainer::optim::Replicas::threads(1)
    } else {
        flick_trainer::optim::Replicas::threads(2)
    };
    common::train_tiny_on(cfg, out, resume, stop_at, on.clone(), replicas)
}

/// The last value of a metrics field.
fn last(run: &Path, field: &str) -> f64 {
    flick_trainer::run::column(run, field)
        .last()
        .unwrap_or_else(|| panic!("no {field} in {}", run.display()))
        .1
}

fn state(run: &Path) -> (BTreeMap<String, Vec<f32>>, BTreeMap<String, String>) {
    let (t, meta) = read_safetensors(&run.join("state.safetensors")).unwrap();
    let t = t.into_iter().map(|(k, (_, v))| (k, v)).collect();
    (t, meta)
}

#[test]
fn the_teacher_skips_a_nonfinite_step_and_stops_on_persistent_ones() {
    let _serial = serial();
    guard_run(&Device::flex(), true);
}

/// The same on a GPU, where the skip is decided on the device and read every few steps.
#[test]
fn the_teacher_skips_a_nonfinite_step_on_a_gpu() {
    let _serial = serial();
    match flick_core::device::open(flick_core::device::BackendKind::Wgpu) {
        Ok(gpu) => guard_run(&gpu, false),
        Err(e) => common::unavailable(&format!("a wgpu adapter ({e})")),
    }
}

/// A skipped step changes nothing (bit for bit where `exact`), is counted and logged; three in a
/// row stop the run, whose last checkpoint resumes.
fn guard_run(on: &Device, exact: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TeacherConfig::load(&common::root().join("configs/teacher-tiny.toml")).unwrap();
    cfg.train.steps = 10;
    cfg.train.checkpoint_every = 2;
    // Losses and update outcomes are read every few steps (a log line every 4, a checkpoint
    // every 2), not after each: the guard replays the steps in between.
    cfg.train.log_every = 4;
    cfg.train.sample_every = 0;
    cfg.train.max_bad_steps = 3;

    // A: three clean updates. B: the same three, then one whose gradient is NaN.
    let a = dir.path().join("a");
    teacher(&cfg, &a, false, Some(3), on).unwrap();
    let b = dir.path().join("b");
    inject_nonfinite(&b, 3..4);
    teacher(&cfg, &b, false, Some(4), on).unwrap();
    let ((ta, ma), (tb, mb)) = (state(&a), state(&b));
    assert_eq!((ma["step"].as_str(), mb["step"].as_str()), ("3", "4"));
    assert_eq!(
        ma["adam_t"], mb["adam_t"],
        "the skipped update counted in Adam's t"
    );
    assert_eq!(ta.len(), tb.len());
    for (k, v) in &ta {
        if exact {
            assert!(v == &tb[k], "{k} changed by a skipped update");
        } else {
            // Another run on a GPU may sum in another order: the same to rounding, where an
            // update taken would move the moments by far more.
            let scale = v.iter().map(|x| x.abs()).fold(1e-6, f32::max);
            let d = v
                .iter()
                .zip(&tb[k])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4 * scale, "{k} changed by a skipped update ({d})");
        }
    }
    assert_eq!(mb["skipped_steps"], "1");
    assert_eq!(last(&b, "skipped_steps"), 1.0);
    let log = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(
        row["step"] == 4 && row["loss"].is_null(),
        "the poisoned step's loss is logged as not a number: {row}"
    );

    // C: every update from step 5 on is non-finite: three in a row stop the run, with the
    // checkpoint of step 6 (written after two skipped updates, weights of step 5) intact.
    let c = dir.path().join("c");
    inject_nonfinite(&c, 5..100);
    let err = format!("{:#}", teacher(&cfg, &c, false, None, on).unwrap_err());
    assert!(
        err.contains("training diverged")
            && err.contains("3 consecutive")
            && err.contains("step 6")
            && err.contains("train.lr")
            && err.contains("--resume"),
        "{err}"
    );
    let (tc, mc) = state(&c);
    assert_eq!(mc["step"], "6");
    assert!(tc.values().flatten().all(|v| v.is_finite()));
    // The cause fixed, the run resumes from that checkpoint and finishes.
    clear_nonfinite(&c);
    teacher(&cfg, &c, true, None, on).unwrap();
    assert_eq!(state(&c).1["step"], "10");
    assert!(last(&c, "loss").is_finite());
}

#[test]
fn every_distillation_loop_skips_a_nonfinite_step() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(&dir.path().join("teacher"), 4);
    let mut cfg = DistillConfig::load(&common::root().join("configs/distill-tiny.toml")).unwrap();
    cfg.sample_prompts.clear();
    let device = Device::flex();
    let pairs = dir.path().join("pairs");
    make_pairs(&cfg.pairs, &teacher, &pairs, &device, true).unwrap();

    // Consistency: step 1 poisoned; the run finishes with finite weights and says so.
    let cons = dir.path().join("consistency");
    inject_nonfinite(&cons, 1..2);
    common::consistency(&cfg, &teacher, &pairs, &cons);
    assert_eq!(last(&cons, "skipped_steps"), 1.0);
    let init = cons.join("generator.safetensors");

    // APT: step 1 poisoned (both networks), the rest of the run goes on.
    let apt = dir.path().join("apt");
    inject_nonfinite(&apt, 1..2);
    fn args<'a>(
        cfg: &'a DistillConfig,
        teacher: &'a Path,
        init: &'a Path,
        out: &'a Path,
    ) -> AptArgs<'a> {
        AptArgs {
            cfg,
            teacher,
            init,
            out,
            resume: false,
            device: Device::flex(),
            replicas: flick_trainer::optim::Replicas::threads(2),
            stop_at: None,
            quiet: true,
        }
    }
    train_apt(args(&cfg, &teacher, &init, &apt)).unwrap();
    assert_eq!(last(&apt, "skipped_steps"), 2.0, "D and G of step 1");
    assert!(last(&apt, "d_loss").is_finite());
    // Persistent: stopped, naming the setting to change.
    let mut short = cfg.clone();
    short.apt.max_bad_steps = 2;
    let apt_bad = dir.path().join("apt-bad");
    inject_nonfinite(&apt_bad, 0..100);
    let err = format!(
        "{:#}",
        train_apt(args(&short, &teacher, &init, &apt_bad)).unwrap_err()
    );
    assert!(err.contains("diverged") && err.contains("lr_d"), "{err}");

    // DMD (variant "dmd": the generator updates every step): step 0 poisoned, both networks.
    let dmd = dir.path().join("dmd");
    inject_nonfinite(&dmd, 0..1);
    train_dmd(DmdArgs {
        cfg: &cfg,
        teacher: &teacher,
        init: &init,
        pairs: Some(&pairs),
        probe: Some(&common::root().join("models/probe.safetensors")),
        out: &dmd,
        resume: false,
        device: Device::flex(),
        replicas: flick_trainer::optim::Replicas::threads(2),
        stop_at: None,
        quiet: true,
    })
    .unwrap();
    assert_eq!(
        last(&dmd, "skipped_steps"),
        2.0,
        "the fake score and the generator at step 0"
    );
    assert!(last(&dmd, "fake_loss").is_finite());
}

#[test]
fn the_probe_skips_a_nonfinite_step() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = flick_trainer::probe::ProbeTrainConfig::load(
        &common::root().join("configs/probe-tiny.toml"),
    )
    .unwrap();
    cfg.train.log_every = 1;
    cfg.train.steps = 6;
    cfg.train.eval_every = 6;
    cfg.train.eval_clips = 16;
    let out = dir.path().join("probe");
    inject_nonfinite(&out, 1..2);
    flick_trainer::probe::train_probe(
        &cfg,
        &out,
        false,
        &Device::flex(),
        &flick_trainer::optim::Replicas::threads(2),
        true,
    )
    .unwrap();
    assert_eq!(last(&out, "skipped_steps"), 1.0);
    assert!(last(&out, "loss").is_finite());
}

#[test]
fn a_full_disk_or_a_read_only_folder_fails_clearly_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TeacherConfig::load(&common::root().join("configs/teacher-tiny.toml")).unwrap();
    cfg.train.steps = 8;
    cfg.train.checkpoint_every = 4;
    cfg.train.sample_every = 0;
    let out = dir.path().join("run");
    teacher(&cfg, &out, false, Some(4), &Device::flex()).unwrap();
    let state = out.join("state.safetensors");
    let before = std::fs::read(&state).unwrap();

    // A full disk: the checkpoint's temporary file is /dev/full (every write: ENOSPC).
    std::os::unix::fs::symlink("/dev/full", out.join("state.safetensors.tmp")).unwrap();
    let err = format!(
        "{:#}",
        teacher(&cfg, &out, true, None, &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("state.safetensors")
            && err.contains("No space left")
            && err.contains("unchanged"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the last checkpoint changed"
    );
    assert!(
        !out.join("state.safetensors.tmp").exists(),
        "the temporary file was left behind"
    );

    // A read-only folder (immutable: read-only even for root).
    let locked = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if !locked {
        common::unavailable("chattr +i (an immutable folder, for the read-only output test)");
        return;
    }
    let result = teacher(&cfg, &out, true, None, &Device::flex());
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&out)
        .status();
    let err = format!("{:#}", result.unwrap_err());
    assert!(
        err.contains("cannot write") || err.contains("Operation not permitted"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the last checkpoint changed"
    );
    // With the folder writable again, the run continues from that checkpoint.
    teacher(&cfg, &out, true, None, &Device::flex()).unwrap();
    assert_eq!(state_step(&out), 8);
}

fn state_step(run: &Path) -> u64 {
    state(run).1["step"].parse().unwrap()
}
