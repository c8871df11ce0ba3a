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
