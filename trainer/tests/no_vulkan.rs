//! Without a Vulkan driver, `--backend wgpu` is a clear error, not a hang: wgpu then offers an
//! OpenGL adapter (Mesa's llvmpipe where EGL is installed), on which burn's kernel autotuning
//! never returns, so Flick refuses it when the device is opened.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn wgpu_without_a_vulkan_driver_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.gif");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flick"))
        .args(["generate", "--backend", "wgpu", "--prompt", "a red circle"])
        .args(["--steps", "1", "--out"])
        .arg(&out)
        // No Vulkan driver for the loader (old and new variable names).
        .env("VK_ICD_FILENAMES", dir.path().join("none.json"))
        .env("VK_DRIVER_FILES", dir.path().join("none.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!(
                "`flick generate --backend wgpu` without a Vulkan driver still runs after 120 s"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!status.success(), "it generated without Vulkan: {stderr}");
    assert!(
        stderr.contains("only an OpenGL adapter") || stderr.contains("no usable wgpu adapter"),
        "{stderr}"
    );
    assert!(stderr.contains("--backend cpu"), "{stderr}");
    assert!(!out.exists(), "no clip is written");
}
