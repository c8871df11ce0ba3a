//! The native viewer: `flick-viewer [--backend auto|cpu|wgpu] [--no-fused] [--models DIR]
//! [--model FILE.safetensors] [--screenshot OUT.png [--select LABEL] [--steps N]]` (from the
//! repository: `bash scripts/viewer`).
//!
//! `--screenshot` is a scripted run (the tests, timing): it starts from default settings
//! (optionally with the model `--select`ed and `--steps`), generates once, saves the window and
//! closes.

use flick_viewer::app::Automation;
use flick_viewer::engine::{ModelSource, ThreadEngine};
use flick_viewer::state::Settings;
use flick_viewer::{ViewerApp, bundled_models, choose_device};

fn main() -> eframe::Result {
    let mut backend = "auto".to_string();
    let mut screenshot = None;
    let mut extra = Vec::new();
    let mut select: Option<String> = None;
    let mut steps: Option<usize> = None;
    let mut models_dir: Option<std::path::PathBuf> = None;
    // --no-fused: burn's composed operations instead of Flick's WGSL kernels (for comparison).
    let (no_fused, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a == "--no-fused");
    flick_core::shaders::set_fused(no_fused.is_empty());
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--backend", Some(v)) => backend = v,
            ("--screenshot", Some(v)) => screenshot = Some(std::path::PathBuf::from(v)),
            ("--model", Some(v)) => extra.push(std::path::PathBuf::from(v)),
            ("--models", Some(v)) => models_dir = Some(std::path::PathBuf::from(v)),
            ("--select", Some(v)) => select = Some(v),
            ("--steps", Some(v)) if v.parse::<usize>().is_ok_and(|n| n >= 1) => {
                steps = v.parse().ok()
            }
            _ => {
                eprintln!(
                    "usage: flick-viewer [--backend auto|cpu|wgpu] [--no-fused] [--models DIR] [--model FILE.safetensors] [--screenshot OUT.png [--select LABEL] [--steps N]]"
                );
                std::process::exit(2);
            }
        }
    }
    let (device, described) = match choose_device(&backend) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("flick-viewer: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("flick-viewer: generating on {described}");
    let mut models: Vec<ModelSource> = bundled_models(models_dir.as_deref())
        .into_iter()
        .map(ModelSource::Path)
        .collect();
    models.extend(extra.into_iter().map(ModelSource::Path));
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1180.0, 760.0])
            .with_title("Flick"),
        ..Default::default()
    };
    eframe::run_native(
        "Flick",
        options,
        Box::new(move |cc| {
            // A scripted run starts from the defaults, not from what a user saved.
            let mut settings: Settings = if screenshot.is_some() {
                Settings::default()
            } else {
                cc.storage
                    .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                    .unwrap_or_default()
            };
            if let Some(label) = select {
                settings.model = label;
            }
            if let Some(n) = steps {
                settings.steps = n;
            }
            let ctx = cc.egui_ctx.clone();
            let engine = ThreadEngine::spawn(device, move || ctx.request_repaint());
            let mut app = ViewerApp::new(
                settings,
                Box::new(engine),
                format!("generating on {described}"),
                models,
            );
            if let Some(path) = screenshot {
                app.automation = Automation::screenshot_to(path);
            }
            Ok(Box::new(app))
        }),
    )
}
