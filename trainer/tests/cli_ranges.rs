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
