//! The whole spine on `tiny`: procedural data → flow-matching training on CPU → checkpoint →
//! reload → generate a GIF → decode it back; and the same checkpoint on the wgpu backend.

mod common;

use std::path::Path;

use flick::burn::prelude::*;
use flick::generate::Generator;
use flick_trainer::config::TeacherConfig;
use flick_trainer::train::{TrainArgs, model_path, train_teacher};
use image::AnimationDecoder;

use common::losses;

fn train_tiny(out: &Path, steps: u64) {
    let path = common::root().join("configs/teacher-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.train.steps = steps;
    config.train.log_every = 1;
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: out.to_path_buf(),
        resume: false,
        device: Device::flex(),
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(2),
        init_from: None,
        init_reset: vec![],
        time_budget: None,
        profile_every: Some(10),
    })
    .unwrap();
}

#[test]
fn tiny_teacher_trains_saves_reloads_and_generates_a_gif() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, 60);

    let l = losses(&run);
    assert_eq!(l.len(), 60);
    assert!(l.iter().all(|v| v.is_finite()));
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[50..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.8 * first,
        "loss did not go down: first 10 mean {first}, last 10 mean {last}"
    );
    assert!(run.join("loss.png").exists() && run.join("config.resolved.toml").exists());

    let device = Device::flex();
    let g = Generator::load(&model_path(&run), &device).unwrap();
    assert_eq!(g.info.kind, "teacher");
    assert_eq!(g.defaults().steps, 4);
    for steps in [1, 3] {
        let video = g
            .generate("a large red circle moving left on black", 7, steps, 2.0)
            .unwrap();
        let gif = dir.path().join(format!("clip{steps}.gif"));
        video.write_gif(&gif, 8).unwrap();
        let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
            std::fs::File::open(&gif).unwrap(),
        ))
        .unwrap();
        let frames = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].buffer().dimensions(), (16, 16));
    }
    // Same seed, same clip; another seed, another clip.
    let a = g.generate("a blue square", 1, 2, 1.0).unwrap();
    assert_eq!(a, g.generate("a blue square", 1, 2, 1.0).unwrap());
    assert_ne!(a, g.generate("a blue square", 2, 2, 1.0).unwrap());
}

#[test]
fn wgpu_backend_matches_cpu_on_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, 5);
    let gpu = match flick::device::open(flick::device::BackendKind::Wgpu) {
        Ok(d) => d,
        Err(e) => return common::unavailable(&format!("a wgpu adapter ({e})")),
    };
    eprintln!("wgpu test on: {}", flick::device::describe(&gpu));
    let cpu = Generator::load(&model_path(&run), &Device::flex()).unwrap();
    let gpu = Generator::load(&model_path(&run), &gpu).unwrap();
    let prompts = vec!["a small green cross rising on gray".to_string()];
    let z = cpu.noise(3);
    let a: Vec<f32> = cpu
        .sample(&prompts, z.clone(), 3, 2.5, |_, _| {})
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b: Vec<f32> = gpu
        .sample(&prompts, z, 3, 2.5, |_, _| {})
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-3, "wgpu and cpu disagree by {max_diff}");
    assert!(a.iter().any(|v| v.abs() > 0.05), "output is trivially zero");
}

#[test]
fn wgpu_backend_trains() {
    let gpu = match flick::device::open(flick::device::BackendKind::Wgpu) {
        Ok(d) => d,
        Err(e) => return common::unavailable(&format!("a wgpu adapter ({e})")),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = common::root().join("configs/teacher-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.train.steps = 3;
    config.train.log_every = 1;
    let out = dir.path().join("run");
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: out.clone(),
        resume: false,
        device: gpu,
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(1),
        init_from: None,
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    })
    .unwrap();
    let l = losses(&out);
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|v| v.is_finite() && *v > 0.0), "{l:?}");
}

#[test]
fn warm_start_grows_the_model_without_changing_it_and_continues_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train_tiny(&a, 6);

    // Grown: the head's time modulation and the text conv (both zero-initialised branches).
    let path = common::root().join("configs/teacher-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.model.head_modulation = true;
    config.model.text.conv_kernel = 5;
    config.train.steps = 9;
    config.train.log_every = 1;

    // Before any training the grown model computes what the source computes.
    let device = Device::flex();
    let source = Generator::load(&model_path(&a), &device).unwrap();
    let (tensors, _) = flick::checkpoint::read_safetensors(&model_path(&a)).unwrap();
    let (grown, fresh) = flick::checkpoint::load_module_partial(
        config.model.init(&device),
        &tensors,
        "",
        &device,
        &[],
    )
    .unwrap();
    assert!(
        fresh.iter().any(|p| p.starts_with("head_ada"))
            && fresh.iter().any(|p| p.starts_with("text.conv")),
        "{fresh:?}"
    );
    let x = Tensor::<5>::random(
        [2, 3, 4, 16, 16],
        flick::burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.8], [2]), &device);
    let prompts = [
        "a red ball".to_string(),
        "a cyan cross moving up".to_string(),
    ];
    let v0 = source.model.forward(
        x.clone(),
        t.clone(),
        &source.model.encode_text(&prompts, &device),
    );
    let v1 = grown.forward(x, t, &grown.encode_text(&prompts, &device));
    let diff: f32 = (v0 - v1).abs().max().into_scalar();
    assert!(
        diff < 1e-5,
        "warm-started model differs from its source by {diff}"
    );

    // The new run continues at the source's step (schedule, data position) with its curve.
    train_teacher(TrainArgs {
        config,
        config_path: path.clone(),
        out: b.clone(),
        resume: false,
        device,
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(1),
        init_from: Some(a.join("state.safetensors")),
        init_reset: vec![],
        time_budget: None,
        profile_every: None,
    })
    .unwrap();
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(lb.len(), 9);
    assert_eq!(lb[..6], la[..]);
    let g = Generator::load(&model_path(&b), &Device::flex()).unwrap();
    assert!(g.info.config.head_modulation && g.info.config.text.conv_kernel == 5);
    assert_eq!(g.info.extra["step"], "9");

    // Changing what the network predicts: the output layer is re-initialised (not copied), its
    // AdamW moments dropped, and the EMA warm-up restarts at the warm-start step.
    let c = dir.path().join("c");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.model.prediction = flick::model::Prediction::Clean;
    config.train.steps = 8;
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: c.clone(),
        resume: false,
        device: Device::flex(),
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(1),
        init_from: Some(a.join("state.safetensors")),
        init_reset: vec!["head2".into()],
        time_budget: None,
        profile_every: None,
    })
    .unwrap();
    let (_, meta) = flick::checkpoint::read_safetensors(&c.join("state.safetensors")).unwrap();
    assert_eq!(
        (meta["step"].as_str(), meta["ema_from_step"].as_str()),
        ("8", "6")
    );
    assert!(losses(&c).iter().all(|l| l.is_finite()));
}

/// `time_budget`: the run times its steps, then ends at a total it writes to config.resolved.toml
/// (at most the config's `steps`), and its metrics end at that step. A tiny budget leaves no
/// room for more than the measured steps, so the outcome does not depend on the machine's speed.
#[test]
fn a_time_budget_ends_the_run_at_the_total_it_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let path = common::root().join("configs/teacher-tiny.toml");
    let mut config = TeacherConfig::load(&path).unwrap();
    config.train.steps = 500;
    config.train.log_every = 1;
    config.train.sample_every = 0;
    train_teacher(TrainArgs {
        config,
        config_path: path,
        out: run.clone(),
        resume: false,
        device: Device::flex(),
        stop_at: None,
        quiet: true,
        replicas: flick_trainer::optim::Replicas::threads(1),
        init_from: None,
        init_reset: vec![],
        time_budget: Some(1e-3),
        profile_every: None,
    })
    .unwrap();
    let resolved = TeacherConfig::load(&run.join("config.resolved.toml")).unwrap();
    assert_eq!(
        resolved.train.steps, 20,
        "5 skipped + 15 timed steps, then nothing left of the budget"
    );
    assert_eq!(resolved.train.cooldown_steps, 0);
    assert_eq!(losses(&run).len(), 20);
    assert!(model_path(&run).exists());
}
