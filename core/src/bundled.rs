//! Where the bundled models are found at run time, so an installed or copied binary finds them
//! too: in this order,
//!
//! 1. the folder given on the command line (`--models DIR`),
//! 2. the folder in `$FLICK_MODELS`,
//! 3. beside the executable: `<exe dir>/models`, then `<exe dir>/../share/flick/models` (an
//!    install prefix),
//! 4. the `models/` folder of the source tree the binary was built from (the default for
//!    `cargo run` and `cargo install --path trainer`, as long as that tree exists).
//!
//! The first folder holding the file wins; when none does, the error lists every place looked.

use std::path::{Path, PathBuf};

/// The environment variable naming a models folder.
pub const ENV_VAR: &str = "FLICK_MODELS";
/// The bundled flow-matching teacher (the multi-step model).
pub const TEACHER: &str = "teacher-small.safetensors";
/// The bundled one-step generator.
pub const GENERATOR: &str = "generator-small.safetensors";
/// The bundled attribute probe `flick eval` judges with.
pub const PROBE: &str = "probe.safetensors";

/// The folders searched for bundled models, in order, each with where it came from.
pub fn search_dirs(flag: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    if let Some(d) = flag {
        dirs.push((d.to_path_buf(), "--models"));
    }
    if let Some(d) = std::env::var_os(ENV_VAR).filter(|d| !d.is_empty()) {
        dirs.push((PathBuf::from(d), "$FLICK_MODELS"));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push((exe_dir.join("models"), "beside the executable"));
        dirs.push((
            exe_dir.join("../share/flick/models"),
            "the executable's install prefix",
        ));
    }
    dirs.push((
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")),
        "the source tree it was built from",
    ));
    dirs
}

/// The path of the bundled model `name` (e.g. [`TEACHER`]): the first of [`search_dirs`] that
/// holds it. A `--models` folder that does not exist is an error of its own (a typo should not
/// silently fall through to another copy).
pub fn find(name: &str, flag: Option<&Path>) -> Result<PathBuf, crate::Error> {
    if let Some(d) = flag
        && !d.is_dir()
    {
        return Err(crate::Error::Io(format!(
            "--models {}: no such folder",
            d.display()
        )));
    }
    let dirs = search_dirs(flag);
    for (d, _) in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(crate::Error::Io(format!(
        "bundled model {name} not found; looked in {} — pass --checkpoint FILE, --models DIR or set {ENV_VAR}",
        dirs.iter()
            .map(|(d, why)| format!("{} ({why})", d.display()))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_comes_first_and_a_missing_model_names_every_place_looked() {
        let dir = std::env::temp_dir().join(format!("flick-bundled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.safetensors"), b"x").unwrap();
        assert_eq!(
            find("x.safetensors", Some(&dir)).unwrap(),
            dir.join("x.safetensors")
        );
        let err = find("nowhere.safetensors", Some(&dir))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--models") && err.contains("source tree"),
            "{err}"
        );
        let err = find(TEACHER, Some(&dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such folder"), "{err}");
        // Without a flag the source tree's bundled teacher is found.
        assert!(find(TEACHER, None).unwrap().is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
