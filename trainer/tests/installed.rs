//! The `flick` binary copied out of the build (as `cargo install` or a release archive would
//! place it) and run from another directory finds the bundled models at run time: beside the
//! executable (an install prefix), through `$FLICK_MODELS` or `--models`, else in the source
//! tree it was built from. (The error that names every place looked is tested in
//! `flick_core::bundled`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn source_models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Run `exe generate` (2 steps, tiny output) in `cwd` with `FLICK_MODELS` set to `env_models`
/// (or unset).
fn generate(exe: &Path, cwd: &Path, env_models: Option<&Path>, extra: &[&str]) -> Output {
    let mut c = Command::new(exe);
    c.current_dir(cwd)
        .args([
            "generate",
            "--prompt",
            "a large red circle moving left on black",
            "--steps",
            "2",
            "--out",
            "clip.gif",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .env_remove("FLICK_MODELS");
    if let Some(m) = env_models {
        c.env("FLICK_MODELS", m);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_copied_binary_finds_the_bundled_models_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let bin = prefix.join("bin");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let exe = bin.join("flick");
    std::fs::copy(env!("CARGO_BIN_EXE_flick"), &exe).unwrap();
    let teacher = source_models().join("teacher-small.safetensors");

    // Nothing beside it: the source tree it was built from.
    let o = generate(&exe, &elsewhere, None, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(elsewhere.join("clip.gif").is_file());
    let src = std::fs::canonicalize(&teacher).unwrap();
    assert!(
        stderr(&o).contains(&src.display().to_string())
            || stderr(&o).contains("../models/teacher-small"),
        "which model was used? {}",
        stderr(&o)
    );

    // An install prefix: <prefix>/share/flick/models wins over the source tree.
    let shared = prefix.join("share/flick/models");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::copy(&teacher, shared.join("teacher-small.safetensors")).unwrap();
    std::fs::remove_file(elsewhere.join("clip.gif")).unwrap();
    let o = generate(&exe, &elsewhere, None, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("share/flick/models"), "{}", stderr(&o));
    assert!(elsewhere.join("clip.gif").is_file());

    // $FLICK_MODELS before that; --models before everything.
    let env_dir = dir.path().join("env-models");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::copy(&teacher, env_dir.join("teacher-small.safetensors")).unwrap();
    let o = generate(&exe, &elsewhere, Some(&env_dir), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("env-models"), "{}", stderr(&o));
    let flag_dir = dir.path().join("flag-models");
    std::fs::create_dir_all(&flag_dir).unwrap();
    std::fs::copy(&teacher, flag_dir.join("teacher-small.safetensors")).unwrap();
    let o = generate(
        &exe,
        &elsewhere,
        Some(&env_dir),
        &["--models", flag_dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("flag-models"), "{}", stderr(&o));

    // A --models folder that does not exist is an error, not a silent fallback to another copy.
    let o = generate(&exe, &elsewhere, None, &["--models", "no-such-folder"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no such folder"), "{}", stderr(&o));
}
