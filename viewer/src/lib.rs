//! `flick-viewer`: prompt a Flick model, watch and scrub the clips it makes (egui, native and in
//! the browser: `web/` hosts this app with an engine in a Web Worker).
//!
//! - [`state`]: everything the viewer knows, without UI (tested directly);
//! - [`engine`]: model loading and generation off the UI thread;
//! - [`app`]: the egui UI over the two;
//! - [`platform`]: opening checkpoints and exports (file dialogs natively, downloads on the web).

pub mod app;
pub mod engine;
pub mod platform;
pub mod state;

use burn::prelude::Device;
use flick_core::device::{BackendKind, describe, open};

pub use app::ViewerApp;

/// The bundled models found at start (see [`bundled_models`]).
static BUNDLED: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();

/// The bundled models offered at start, the one-step generator first, found at run time
/// (`--models DIR`, `$FLICK_MODELS`, beside the executable, the source tree: see
/// [`flick_core::bundled`]); the ones not found are named on stderr.
pub fn bundled_models(dir: Option<&std::path::Path>) -> Vec<std::path::PathBuf> {
    let found: Vec<_> = [flick_core::bundled::GENERATOR, flick_core::bundled::TEACHER]
        .into_iter()
        .filter_map(|name| match flick_core::bundled::find(name, dir) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("flick-viewer: {e}");
                None
            }
        })
        .collect();
    let _ = BUNDLED.set(found.clone());
    found
}

/// The same models on the web page, relative to it (f16 copies, made by `web/build.sh`).
pub const WEB_BUNDLED: [&str; 2] = [
    "models/generator-small.safetensors",
    "models/teacher-small.safetensors",
];

/// Whether `origin` is one of the bundled files (they are not added to the "opened" list).
pub fn is_bundled(origin: &str) -> bool {
    let same = |a: &std::path::Path, b: &std::path::Path| {
        a == b
            || std::fs::canonicalize(a)
                .ok()
                .is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
    };
    // Before `bundled_models` ran (an app built by hand, as in tests): the default lookup.
    BUNDLED
        .get_or_init(|| {
            [flick_core::bundled::GENERATOR, flick_core::bundled::TEACHER]
                .into_iter()
                .filter_map(|n| flick_core::bundled::find(n, None).ok())
                .collect()
        })
        .iter()
        .any(|b| same(b, std::path::Path::new(origin)))
        || WEB_BUNDLED.contains(&origin)
}

/// Which device generates. `auto`: a GPU through wgpu when there is a real one; on machines whose
/// only adapter is a CPU rasteriser (lavapipe, llvmpipe, SwiftShader) burn's CPU backend is
/// several times faster, so it is used instead.
pub fn choose_device(choice: &str) -> Result<(Device, String), String> {
    let pick = |kind| {
        open(kind)
            .map(|d| {
                let s = describe(&d);
                (d, s)
            })
            .map_err(|e| e.to_string())
    };
    match choice {
        "cpu" => pick(BackendKind::Cpu),
        "wgpu" | "gpu" => pick(BackendKind::Wgpu),
        "auto" => match pick(BackendKind::Wgpu) {
            Ok((d, s)) if !is_software(&s) => Ok((d, s)),
            Ok((_, s)) => pick(BackendKind::Cpu).map(|(d, c)| {
                (
                    d,
                    format!("{c} (the only wgpu adapter is {s}, a CPU rasteriser)"),
                )
            }),
            Err(_) => pick(BackendKind::Cpu).map(|(d, c)| (d, format!("{c} (no wgpu adapter)"))),
        },
        other => Err(format!("unknown backend {other:?}: use auto, cpu or wgpu")),
    }
}

fn is_software(adapter: &str) -> bool {
    let a = adapter.to_ascii_lowercase();
    ["llvmpipe", "lavapipe", "swiftshader", "softpipe"]
        .iter()
        .any(|s| a.contains(s))
}
