//! The viewer driven headlessly: the real app UI (egui_kittest, no window) over an engine that
//! generates inline with the bundled models on the CPU.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::Device;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use flick_viewer::ViewerApp;
use flick_viewer::engine::{InlineEngine, ModelSource};
use flick_viewer::state::Settings;

fn bundled(name: &str) -> ModelSource {
    ModelSource::Path(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(format!("{name}.safetensors")),
    )
}

/// The app with the bundled one-step generator (and the teacher when `teacher`).
fn app(teacher: bool) -> ViewerApp {
    let mut models = vec![bundled("generator-small")];
    if teacher {
        models.push(bundled("teacher-small"));
    }
    let settings = Settings {
        batch: 3,
        steps: 2,
        ..Settings::default()
    };
    ViewerApp::new(
        settings,
        Box::new(InlineEngine::new(Device::flex())),
        "cpu".into(),
        models,
    )
}

fn harness(app: ViewerApp) -> Harness<'static, ViewerApp> {
    let mut h = Harness::builder()
        .with_size([1180.0, 760.0])
        .build_ui_state(|ui, app: &mut ViewerApp| app.show(ui), app);
    h.run_steps(2);
    h
}

#[test]
fn generating_fills_the_history_and_draws_every_clip() {
    let mut h = harness(app(false));
    assert_eq!(
        h.state().state.models.len(),
        1,
        "{:?}",
        h.state().state.error
    );
    h.get_by_label("Generate").click();
    h.run_steps(3);
    let s = &h.state().state;
    assert_eq!(s.history.len(), 1);
    let g = &s.history[0];
    assert_eq!(g.seeds, vec![7, 8, 9]);
    assert_eq!(g.rows.len(), 1);
    assert_eq!(g.rows[0].clips.len(), 3);
    assert_eq!(g.rows[0].steps, 1, "a one-step generator runs one step");
    assert!(g.rows[0].secs_per_clip.is_some() && g.rows[0].latency.is_some());
    assert_eq!(h.state().drawn, vec![(0, 0, 0), (0, 1, 0), (0, 2, 0)]);
    // A second prompt: the history grows, the first one can be restored.
    h.state_mut().state.settings.prompt = "a small blue cross moving up on gray".into();
    h.state_mut().state.settings.seed = 100;
    h.get_by_label("Generate").click();
    h.run_steps(3);
    assert_eq!(h.state().state.history.len(), 2);
    h.state_mut().state.restore(0);
    h.run_steps(2);
    let s = &h.state().state;
    assert_eq!(s.settings.prompt, "a large red circle moving left on black");
    assert_eq!(s.settings.seed, 7);
    assert_eq!(s.shown, Some(0));
}

#[test]
fn scrubbing_moves_every_clip_of_the_grid_together() {
    let mut h = harness(app(true));
    assert_eq!(h.state().state.models.len(), 2);
    h.state_mut().state.settings.compare = true;
    h.get_by_label("Generate").click();
    h.run_steps(3);
    let g = h.state().state.history[0].clone();
    assert_eq!(
        g.rows.len(),
        2,
        "compare: the one-step generator and the teacher"
    );
    assert_eq!((g.rows[0].steps, g.rows[1].steps), (1, 2));
    assert!(g.rows.iter().all(|r| r.clips.len() == 3));
    let frames = g.frames();
    assert_eq!(frames, 8);
    // → steps one frame on every clip of both rows; ← twice wraps to the last frame.
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    let drawn = h.state().drawn.clone();
    assert_eq!(drawn.len(), 6);
    assert!(drawn.iter().all(|d| d.2 == 1), "{drawn:?}");
    h.key_press(egui::Key::ArrowLeft);
    h.run_steps(1);
    h.key_press(egui::Key::ArrowLeft);
    h.run_steps(2);
    assert!(
        h.state().drawn.iter().all(|d| d.2 == frames - 1),
        "{:?}",
        h.state().drawn
    );
    // The timeline slider's value is what playback shows.
    h.state_mut().state.playback.scrub(4, frames);
    h.run_steps(2);
    assert!(h.state().drawn.iter().all(|d| d.2 == 4));
    // Space plays: frames advance by themselves.
    h.key_press(egui::Key::Space);
    h.run_steps(2);
    assert!(h.state().state.playback.playing);
}

#[test]
fn a_bad_checkpoint_shows_an_error_and_the_previous_model_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    // A text file, a 0-byte file, a huge file (8 GiB, sparse: nothing read before it is
    // refused) and a valid safetensors file that is not a Flick checkpoint.
    let text = dir.path().join("not-a-model.safetensors");
    std::fs::write(&text, b"this is not a checkpoint").unwrap();
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let huge = dir.path().join("huge.safetensors");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let foreign = dir.path().join("foreign.safetensors");
    let mut header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&foreign, bytes).unwrap();

    let mut h = harness(app(false));
    let before = h.state().state.models.clone();
    for (bad, why) in [
        (&text, "not a safetensors file"),
        (&empty, "not a safetensors file"),
        (&huge, "too large"),
        (&foreign, "not a Flick checkpoint"),
    ] {
        h.state_mut().open_path(bad.clone());
        h.run_steps(2);
        let s = &h.state().state;
        let err = s.error.clone().expect("an error for the bad file");
        let name = bad.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name)
                && err.contains("not a usable Flick checkpoint")
                && err.contains(why),
            "{err}"
        );
        assert_eq!(s.models, before, "the model list is unchanged");
        assert!(s.loading.is_empty());
        assert_eq!(
            s.current_model().map(|m| m.label.as_str()),
            Some("generator-small")
        );
        assert!(
            s.settings.opened.is_empty(),
            "a file that failed is not offered again: {:?}",
            s.settings.opened
        );
    }
    h.get_by_label("Generate").click();
    h.run_steps(3);
    let s = &h.state().state;
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].rows[0].clips.len(), 3);
    assert!(s.error.is_none(), "{:?}", s.error);
}

/// Settings go through eframe's storage and come back.
#[test]
fn settings_persist() {
    #[derive(Default)]
    struct Mem(HashMap<String, String>);
    impl eframe::Storage for Mem {
        fn get_string(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn set_string(&mut self, key: &str, value: String) {
            self.0.insert(key.into(), value);
        }
        fn remove_string(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn flush(&mut self) {}
    }
    let mut app = app(false);
    app.state.settings.prompt = "a big green ball".into();
    app.state.settings.fps = 12.0;
    let mut store = Mem::default();
    eframe::App::save(&mut app, &mut store);
    let back: Settings = eframe::get_value(&store, eframe::APP_KEY).unwrap();
    assert_eq!(back, app.state.settings);
}

/// A saved model choice survives start-up even when another model finishes loading first.
#[test]
fn the_saved_model_choice_is_kept() {
    let settings = Settings {
        model: "teacher-small".into(),
        ..Settings::default()
    };
    let app = ViewerApp::new(
        settings,
        Box::new(InlineEngine::new(Device::flex())),
        "cpu".into(),
        vec![bundled("generator-small"), bundled("teacher-small")],
    );
    let h = harness(app);
    assert_eq!(
        h.state().state.current_model().map(|m| m.label.as_str()),
        Some("teacher-small")
    );
}

/// The explorer: dragging the slider makes a sequence of distinct clips, and the clip left on
/// screen is the direct generation at the slider's final value; the pad does the same in 2-D.
#[test]
fn dragging_the_explorer_follows_the_hand() {
    use flick_core::generate::{Generator, LatentPoint};
    let mut h = harness(app(false));
    h.get_by_label("explore").click();
    h.run_steps(3);
    assert!(h.state().state.settings.explore);
    assert_eq!(
        h.state().state.explorer.made,
        1,
        "{:?}",
        h.state().state.explorer.error
    );
    h.state_mut().state.settings.explore_prompt_b =
        "a small cyan square moving up on dark green".into();
    h.run_steps(3);
    let rail = h.state().widget_rects["explore_slider"];
    let y = rail.center().y;
    let x = |f: f32| rail.left() + 2.0 + f * (rail.width() - 4.0);
    h.hover_at(egui::pos2(x(0.0), y));
    h.run_steps(1);
    h.drag_at(egui::pos2(x(0.0), y));
    h.run_steps(1);
    let mut seen = Vec::new();
    let t0 = std::time::Instant::now();
    for k in 1..=10 {
        h.hover_at(egui::pos2(x(k as f32 / 10.0 * 0.8), y));
        h.run_steps(2);
        let e = &h.state().state.explorer;
        let (job, clip) = e.clip.as_ref().expect("a clip");
        seen.push((job.point.at[0], clip.rgba.clone()));
    }
    // A measurement, not a check: how fast the clip follows the hand here (the inline engine
    // makes each clip inside the frame that asks for it).
    eprintln!(
        "explorer, native CPU: 10 moves, {:.1} clips/s while dragging",
        10.0 / t0.elapsed().as_secs_f64()
    );
    h.drop_at(egui::pos2(x(0.8), y));
    h.run_steps(3);
    let distinct: std::collections::HashSet<&Vec<u8>> = seen.iter().map(|(_, c)| c).collect();
    assert!(
        distinct.len() >= 8,
        "{} distinct clips in 10 moves",
        distinct.len()
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 > w[0].0),
        "the clip follows the hand: {:?}",
        seen.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let s = &h.state().state;
    let (job, clip) = s.explorer.clip.as_ref().unwrap();
    assert!(
        (0.7..0.9).contains(&s.explorer.at[0]),
        "{:?}",
        s.explorer.at
    );
    assert_eq!(
        job.point.at, s.explorer.at,
        "the clip on screen is at the slider's final value"
    );
    assert!(s.explorer.made >= 9);
    let g = Generator::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/generator-small.safetensors"),
        &Device::flex(),
    )
    .unwrap();
    let point = LatentPoint {
        corners: vec![
            ("a large red circle moving left on black".into(), 7),
            ("a small cyan square moving up on dark green".into(), 8),
        ],
        at: s.explorer.at,
    };
    assert_eq!(job.point, point);
    let direct = g.explore(&point, 1, g.defaults().guidance).unwrap();
    assert_eq!(
        clip.rgba, direct.rgba,
        "equals a direct generation at the final value"
    );

    // The pad over four seeds: a click puts the clip there.
    h.state_mut().state.settings.explore_mode = flick_viewer::state::ExploreMode::Pad;
    h.run_steps(3);
    let pad = h.state().widget_rects["explore_pad"];
    let p = pad.min + egui::vec2(0.25, 0.75) * pad.size();
    h.hover_at(p);
    h.run_steps(1);
    h.drag_at(p);
    h.run_steps(2);
    h.drop_at(p);
    h.run_steps(3);
    let s = &h.state().state;
    let (job, clip) = s.explorer.clip.as_ref().unwrap();
    assert_eq!(job.point.corners.len(), 4);
    assert!(
        (job.point.at[0] - 0.25).abs() < 0.02 && (job.point.at[1] - 0.75).abs() < 0.02,
        "{:?}",
        job.point.at
    );
    let direct = g.explore(&job.point, 1, g.defaults().guidance).unwrap();
    assert_eq!(clip.rgba, direct.rgba);
    assert!(s.explorer.error.is_none());
}
