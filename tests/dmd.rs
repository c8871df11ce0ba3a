//! Distribution matching distillation on `tiny`: a few DMD and DMD2 updates with finite losses,
//! the fake score's weights moved away from the teacher's, a run stopped and resumed that ends
//! where an uninterrupted one does, and a generator checkpoint that loads and generates.

mod common;

use std::path::Path;

use burn::prelude::*;
use flick_core::checkpoint::read_safetensors;
use flick_core::generate::Generator;
use flick_trainer::distill::{DistillConfig, make_pairs};
use flick_trainer::dmd::{DmdArgs, Variant, train_dmd};

fn rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn dmd(
    cfg: &DistillConfig,
    teacher: &Path,
    pairs: Option<&Path>,
    out: &Path,
    resume: bool,
    stop_at: Option<u64>,
) {
    train_dmd(DmdArgs {
        cfg,
        teacher,
        init: teacher,
        pairs,
        probe: Some(&common::root().join("models/probe.safetensors")),
        out,
        resume,
        device: Device::flex(),
        replicas: flick_trainer::optim::Replicas::threads(2),
        stop_at,
        quiet: true,
    })
    .unwrap();
}

/// The error of resuming the run in `out` with `cfg` (which must refuse it).
fn resume_refused(
    cfg: &DistillConfig,
    teacher: &Path,
    pairs: Option<&Path>,
    out: &Path,
) -> anyhow::Error {
    let probe = common::root().join("models/probe.safetensors");
    train_dmd(DmdArgs {
        cfg,
        teacher,
        init: teacher,
        pairs,
        probe: pairs.map(|_| probe.as_path()),
        out,
        resume: true,
        device: Device::flex(),
        replicas: flick_trainer::optim::Replicas::threads(2),
        stop_at: None,
        quiet: true,
    })
    .unwrap_err()
}

#[test]
fn dmd_and_dmd2_train_resume_and_generate_on_tiny() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(&dir.path().join("teacher"), 8);
    let mut cfg = DistillConfig::load(&common::root().join("configs/distill-tiny.toml")).unwrap();
    let cache = dir.path().join("pairs");
    make_pairs(&cfg.pairs, &teacher, &cache, &Device::flex(), true).unwrap();

    // DMD without pairs is refused (its regression loss needs them).
    let err = train_dmd(DmdArgs {
        cfg: &cfg,
        teacher: &teacher,
        init: &teacher,
        pairs: None,
        probe: None,
        out: &dir.path().join("refused"),
        resume: false,
        device: Device::flex(),
        replicas: flick_trainer::optim::Replicas::threads(1),
        stop_at: None,
        quiet: true,
    })
    .unwrap_err();
    assert!(err.to_string().contains("--pairs"), "{err}");

    // DMD: 4 steps at once, and 2 + 2 with a resume in between. DMD2's GAN and time-scale
    // settings in the same config are ignored by the DMD variant.
    {
        let c = cfg.dmd.as_mut().unwrap();
        (c.gan_g_weight, c.gan_d_weight, c.gan_heads, c.fake_updates) = (3e-3, 1e-2, 2, 5);
    }
    let whole = dir.path().join("dmd");
    dmd(&cfg, &teacher, Some(&cache), &whole, false, None);
    let parts = dir.path().join("dmd-resumed");
    dmd(&cfg, &teacher, Some(&cache), &parts, false, Some(2));
    dmd(&cfg, &teacher, Some(&cache), &parts, true, None);
    let log = rows(&whole);
    assert_eq!(log.len(), 4);
    for r in &log {
        assert!(
            r["dm_loss"].is_number(),
            "DMD updates the generator every step: {r}"
        );
        assert!(
            r["gan_d_loss"].is_null() && r["gan_g_loss"].is_null(),
            "DMD has no GAN: {r}"
        );
        for field in ["fake_loss", "dm_loss", "reg_loss", "gen_mean", "gen_std"] {
            let v = r[field].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{field} = {v} in {r}");
        }
    }
    let (a, _) = read_safetensors(&whole.join("generator.safetensors")).unwrap();
    let (b, _) = read_safetensors(&parts.join("generator.safetensors")).unwrap();
    assert_eq!(
        a, b,
        "the resumed DMD run ended elsewhere than the uninterrupted one"
    );

    // The regression's probe-feature term counts: the same first step without it has a
    // smaller regression loss.
    let plain = dir.path().join("dmd-pixels");
    cfg.dmd.as_mut().unwrap().probe_weight = 0.0;
    dmd(&cfg, &teacher, Some(&cache), &plain, false, Some(1));
    cfg.dmd.as_mut().unwrap().probe_weight = 1.0;
    let (with, without) = (
        log[0]["reg_loss"].as_f64().unwrap(),
        rows(&plain)[0]["reg_loss"].as_f64().unwrap(),
    );
    assert!(with > without, "probe term missing: {with} vs {without}");

    // The fake score moved away from the teacher; the generator moved too.
    let (state, meta) = read_safetensors(&whole.join("state.safetensors")).unwrap();
    assert_eq!(meta["variant"], "dmd");
    let (t, _) = read_safetensors(&teacher).unwrap();
    let moved = |prefix: &str| {
        t.iter()
            .filter(|(k, _)| !k.starts_with("text."))
            .map(|(k, (_, v))| {
                let w = &state[&format!("{prefix}{k}")].1;
                v.iter()
                    .zip(w)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            })
            .fold(0f32, f32::max)
    };
    assert!(
        moved("fake.backbone.") > 0.0,
        "the fake score did not train"
    );
    assert!(moved("g.") > 0.0, "the generator did not train");

    // The generator's checkpoint loads and makes a clip in one step.
    let g = Generator::load(&whole.join("generator.safetensors"), &Device::flex()).unwrap();
    let clips = g
        .generate_videos(
            &["a small blue square".to_string()],
            &[3],
            1,
            1.0,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(clips.len(), 1);

    // DMD2: no regression, the generator updated every 2nd step, the GAN on.
    let d2 = dir.path().join("dmd2");
    let c = cfg.dmd.as_mut().unwrap();
    c.variant = Variant::Dmd2;
    (c.gan_g_weight, c.gan_d_weight, c.gan_heads, c.fake_updates) = (3e-3, 1e-2, 2, 2);
    dmd(&cfg, &teacher, None, &d2, false, None);
    let log = rows(&d2);
    let with_g: Vec<u64> = log
        .iter()
        .filter(|r| r.get("dm_loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(with_g, vec![2, 4], "DMD2's generator steps");
    assert!(log.iter().all(|r| r.get("reg_loss").is_none()));
    assert!(
        log.iter()
            .all(|r| r["fake_loss"].as_f64().unwrap().is_finite())
    );
    assert!(
        log.iter()
            .all(|r| r["gan_d_loss"].as_f64().unwrap().is_finite())
    );
    for r in log.iter().filter(|r| r.get("dm_loss").is_some()) {
        assert!(r["gan_g_loss"].as_f64().unwrap().is_finite(), "{r}");
    }
    // The GAN heads trained (they start random and only the GAN loss reaches them).
    let (s2, _) = read_safetensors(&d2.join("state.safetensors")).unwrap();
    let (s0, _) = {
        let first = dir.path().join("dmd2-1");
        dmd(&cfg, &teacher, None, &first, false, Some(1));
        read_safetensors(&first.join("state.safetensors")).unwrap()
    };
    let head = s2
        .keys()
        .find(|k| k.starts_with("fake.heads.") && k.ends_with("query"))
        .expect("a GAN head query")
        .clone();
    assert_ne!(s2[&head].1, s0[&head].1, "the GAN head did not move");
    // A two-step DMD2 generator (backward simulation): the checkpoint records its times and
    // samples in 1 or 2 steps, not 3; two steps make another clip than one.
    let ms = dir.path().join("dmd2-two-step");
    cfg.dmd.as_mut().unwrap().generator_times = vec![1.0, 0.5];
    dmd(&cfg, &teacher, None, &ms, false, None);
    cfg.dmd.as_mut().unwrap().generator_times.clear();
    let g2 = Generator::load(&ms.join("generator.safetensors"), &Device::flex()).unwrap();
    assert_eq!(g2.generator_times(), Some(vec![1.0, 0.5]));
    assert_eq!(g2.defaults().steps, 2);
    let prompt = ["a large red circle moving left on black".to_string()];
    let clip = |steps| g2.generate_clips(&prompt, &[5], steps, 1.0, |_, _| {});
    let (one, two) = (clip(1).unwrap(), clip(2).unwrap());
    assert_ne!(one[0].data, two[0].data, "two steps made the one-step clip");
    assert_eq!(
        two[0].data,
        clip(2).unwrap()[0].data,
        "sampling is not a function of the seed"
    );
    assert!(clip(3).is_err());
    // Resuming it as a one-step generator is refused (the schedule would change mid-run).
    let err = resume_refused(&cfg, &teacher, None, &ms);
    assert!(err.to_string().contains("generator_times"), "{err}");
    // Times that do not start at 1 and decrease are refused.
    cfg.dmd.as_mut().unwrap().generator_times = vec![0.5, 1.0];
    let bad = std::panic::catch_unwind(|| {
        dmd(
            &cfg,
            &teacher,
            None,
            &dir.path().join("bad-times"),
            false,
            None,
        )
    });
    assert!(bad.is_err(), "decreasing-times check");
    cfg.dmd.as_mut().unwrap().generator_times.clear();

    // Resuming a DMD2 state as DMD is refused.
    cfg.dmd.as_mut().unwrap().variant = Variant::Dmd;
    let err = resume_refused(&cfg, &teacher, Some(&cache), &d2);
    assert!(err.to_string().contains("dmd2"), "{err}");
}
