//! Numbers out of range on the command line: an error that names the flag and its range, exit
//! status 2, before anything is loaded or run.

use std::process::{Command, Stdio};

fn flick(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flick"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn out_of_range_numbers_are_refused_naming_the_flag_and_range() {
    let g = ["generate", "--prompt", "a red circle"];
    let t = [
        "train-teacher",
        "--config",
        "configs/teacher-tiny.toml",
        "--out",
        "/nonexistent/x",
    ];
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        ([&g[..], &["--steps", "0"]].concat(), "--steps", "1 to 1000"),
        (
            [&g[..], &["--steps", "100000000"]].concat(),
            "--steps",
            "1 to 1000",
        ),
        ([&g[..], &["--steps=-3"]].concat(), "--steps", "1 to 1000"),
        (
            [&g[..], &["--guidance", "NaN"]].concat(),
            "--guidance",
            "0 to 100",
        ),
        (
            [&g[..], &["--guidance", "inf"]].concat(),
            "--guidance",
            "0 to 100",
        ),
        (
            [&g[..], &["--guidance=-2"]].concat(),
            "--guidance",
            "0 to 100",
        ),
        ([&g[..], &["--scale", "0"]].concat(), "--scale", "1 to 64"),
        (
            [&g[..], &["--scale", "100000"]].concat(),
            "--scale",
            "1 to 64",
        ),
        ([&g[..], &["--fps", "0"]].concat(), "--fps", "1 to 100"),
        (
            [&g[..], &["--shift=-1"]].concat(),
            "--shift",
            "greater than 0",
        ),
        (
            [&g[..], &["--shift", "NaN"]].concat(),
            "--shift",
            "greater than 0",
        ),
        (
            [&g[..], &["--seed", "18446744073709551616"]].concat(),
            "--seed",
            "",
        ),
        (
            [&t[..], &["--steps", "0"]].concat(),
            "--steps",
            "1 to 100000000",
        ),
        (
            [&t[..], &["--steps", "1000000000"]].concat(),
            "--steps",
            "1 to 100000000",
        ),
        (
            [&t[..], &["--workers", "0"]].concat(),
            "--workers",
            "1 to 256",
        ),
        (
            [&t[..], &["--time-budget", "0"]].concat(),
            "--time-budget",
            "greater than 0",
        ),
        (
            [&t[..], &["--time-budget", "NaN"]].concat(),
            "--time-budget",
            "greater than 0",
        ),
        (
            vec!["eval", "--prompts", "1000000"],
            "--prompts",
            "0 to 10000",
        ),
        (vec!["eval", "--seeds", "0"], "--seeds", "1 to 1000"),
        (vec!["score", "--steps", "1,0"], "--steps", "1 to 1000"),
        (
            vec!["data-preview", "--count", "0"],
            "--count",
            "1 to 100000",
        ),
    ];
    for (args, flag, range) in &cases {
        let (code, err) = flick(args);
        assert_eq!(code, 2, "{args:?}: exit {code}: {err}");
        assert!(
            err.contains(flag) && err.contains(range) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    eprintln!(
        "{} out-of-range command lines refused, naming flag and range",
        cases.len()
    );
}

/// `--devices` on every training command: a malformed list is refused by the parser; an index the
/// machine does not have is an error naming the adapters it found (or saying it found none).
#[test]
fn every_training_command_takes_devices_and_names_the_adapters_on_a_bad_index() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = |name: &str| root.join("configs").join(name).display().to_string();
    let (teacher, probe, distill) = (
        cfg("teacher-tiny.toml"),
        cfg("probe.toml"),
        cfg("distill-tiny.toml"),
    );
    let out = std::env::temp_dir().join("flick-devices-refused");
    let out = out.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["train-teacher", "--config", &teacher, "--out", out],
        vec!["train-probe", "--config", &probe, "--out", out],
        vec![
            "distill",
            "consistency",
            "--config",
            &distill,
            "--pairs",
            out,
            "--out",
            out,
        ],
        vec![
            "distill", "apt", "--config", &distill, "--init", out, "--out", out,
        ],
        vec![
            "distill", "dmd", "--config", &distill, "--init", out, "--out", out,
        ],
    ];
    for c in &commands {
        let (code, err) = flick(&[&c[..], &["--devices", "0,x"]].concat());
        assert_eq!(code, 2, "{c:?}: {err}");
        assert!(err.contains("--devices"), "{c:?}: {err}");
        let (code, err) = flick(&[&c[..], &["--devices", "99"]].concat());
        assert_eq!(code, 1, "{c:?}: {err}");
        assert!(
            err.contains("no adapter 99")
                && (err.contains("wgpu adapters: 0 = ") || err.contains("no wgpu adapter")),
            "{c:?}: {err}"
        );
    }
    assert!(
        !std::path::Path::new(out).exists(),
        "a refused run wrote {out}"
    );
}
