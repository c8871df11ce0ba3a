//! The files Flick writes open in the Python ecosystem: the bundled checkpoints (the teacher and
//! the one-step generator) in `safetensors` (readable tensor names, config metadata) and a
//! generated GIF in Pillow.

mod common;

use std::process::Command;

#[test]
fn bundled_checkpoint_and_generated_gif_open_in_python() {
    let root = common::root();
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return common::unavailable("the Python venv with Pillow and safetensors (.venv)");
    }
    for (file, kind, steps, guidance) in [
        ("teacher-small", "teacher", 2, 3.0),
        ("generator-small", "generator", 1, 1.0),
    ] {
        let model = root.join("models").join(format!("{file}.safetensors"));
        assert!(
            model.exists(),
            "the bundled model {} is missing",
            model.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let gif = dir.path().join("clip.gif");
        let g = flick::generate::Generator::load(&model, &flick::burn::prelude::Device::flex())
            .unwrap();
        assert_eq!(g.info.kind, kind);
        let video = g
            .generate(
                "a large red circle moving left on black",
                0,
                steps,
                guidance,
            )
            .unwrap();
        video.write_gif(&gif, 8).unwrap();
        let out = Command::new(&python)
            .arg(root.join("scripts/check_files.py"))
            .arg(&model)
            .arg(&gif)
            .arg(format!("{}x{}x{}", video.frames, video.height, video.width))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "python check of {file} failed:\n{text}"
        );
        assert!(
            text.contains("safetensors ok")
                && text.contains(&format!("kind={kind}"))
                && text.contains("gif ok"),
            "{text}"
        );
    }
}
