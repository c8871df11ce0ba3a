//! Kill test: training runs (the teacher, APT, DMD2) SIGKILLed at random moments — checkpoint
//! writes included — and resumed each time. After every kill each checkpoint and state file on
//! disk loads and at most `checkpoint_every` steps are lost; the run that was killed and resumed
//! ends with the same losses (to the last bit) and the same weights, EMA and optimiser moments
//! as a run never interrupted.
//!
//! `FLICK_KILLS` kills per run (default 3: the short form in the test command);
//! `scripts/kill-test.sh` runs the long form (20) and prints the report. `FLICK_KILL_SEED`
//! repeats a campaign (the seed is printed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flick_core::checkpoint::read_safetensors;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn flick(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flick"));
    c.args(args)
        .env("FLICK_MODELS", root().join("models"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_ok(args: &[String]) {
    let out = flick(args).output().unwrap();
    assert!(
        out.status.success(),
        "flick {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// xorshift, seeded per campaign.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The step a run folder's state holds (0 without one); panics if a state file is there and
/// does not load.
fn saved_step(run: &Path) -> u64 {
    let p = run.join("state.safetensors");
    if !p.exists() {
        return 0;
    }
    let (_, meta) = read_safetensors(&p)
        .unwrap_or_else(|e| panic!("a state file on disk does not load after a kill: {e}"));
    meta["step"].parse().unwrap()
}

/// `(step, loss text)` of every metrics line, the loss as written (bit-exact comparison).
fn loss_lines(run: &Path, field: &str) -> Vec<(u64, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["step"].as_u64()?, v[field].to_string()))
        })
        .collect()
}

#[derive(Default, Debug)]
struct Report {
    kills: usize,
    during_write: usize,
    max_lost: u64,
    lost: Vec<u64>,
    history: usize,
}

/// Kill `cmd --out run` `kills` times at random moments (resuming each time), then let it
/// finish; checks the files after each kill.
#[allow(clippy::zombie_processes)] // every child is killed or waited for below
#[allow(clippy::too_many_arguments)]
fn campaign(
    cmd: &[String],
    run: &Path,
    models: &[&str],
    checkpoint_every: u64,
    total: u64,
    full_time: Duration,
    kills: usize,
    rng: &mut Rng,
) -> Report {
    let mut report = Report::default();
    let with_out = |resume: bool| {
        let mut a = cmd.to_vec();
        a.extend(s(&["--out", run.to_str().unwrap()]));
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let mut resume = false;
    while report.kills < kills {
        let saved = saved_step(run);
        let left = (total - saved) as f64 / total as f64;
        // A moment in the remaining work, start-up included.
        let delay = full_time.mul_f64(rng.unit() * left.max(0.05));
        let mut child = flick(&with_out(resume))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{} ended with {status}", cmd.join(" "));
            if saved_step(run) == total {
                // Finished before the kill (a faster invocation than the timed reference one):
                // the campaign ends with fewer kills.
                return report;
            }
            resume = true;
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        report.kills += 1;
        if std::fs::read_dir(run)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false)
        {
            report.during_write += 1;
        }
        // Every file on disk loads; the log shows how far the run got before the kill.
        let saved = saved_step(run);
        for m in models {
            let p = run.join(m);
            if p.exists() {
                read_safetensors(&p)
                    .unwrap_or_else(|e| panic!("{m} does not load after a kill: {e}"));
            }
        }
        // Earlier checkpoints kept (the teacher keeps 3): each loads, never more than kept.
        if let Ok(history) = std::fs::read_dir(run.join("checkpoints")) {
            let kept: Vec<PathBuf> = history
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            assert!(kept.len() <= 3, "{} checkpoints kept", kept.len());
            for p in &kept {
                read_safetensors(p)
                    .unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()));
            }
            report.history = report.history.max(kept.len());
        }
        let reached = loss_lines(run, "step").last().map_or(0, |l| l.0);
        let lost = reached.saturating_sub(saved);
        assert!(
            lost <= checkpoint_every,
            "{lost} steps lost (reached {reached}, saved {saved}; checkpoint_every {checkpoint_every})"
        );
        report.lost.push(lost);
        report.max_lost = report.max_lost.max(lost);
        resume = true;
    }
    run_ok(&with_out(resume));
    assert_eq!(saved_step(run), total);
    report
}

/// The killed run ends exactly where the uninterrupted one does: every tensor of the state and
/// every logged loss, to the last bit.
fn same_run(a: &Path, b: &Path, fields: &[&str]) {
    let (ta, ma) = read_safetensors(&a.join("state.safetensors")).unwrap();
    let (tb, mb) = read_safetensors(&b.join("state.safetensors")).unwrap();
    assert_eq!(ma["step"], mb["step"]);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, (_, va)) in &ta {
        let vb = &tb[k].1;
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs from the uninterrupted run"
        );
    }
    for f in fields {
        assert_eq!(
            loss_lines(a, f),
            loss_lines(b, f),
            "{f} differs from the uninterrupted run"
        );
    }
}

#[test]
fn training_killed_at_random_moments_resumes_exactly() {
    let kills: usize = std::env::var("FLICK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("FLICK_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill campaign: {kills} kills per run, FLICK_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Configs: checkpoints every 5 steps, a line per step.
    let teacher_cfg = d.join("teacher.toml");
    let text = std::fs::read_to_string(root().join("configs/teacher-tiny.toml"))
        .unwrap()
        .replace("log_every = 10", "log_every = 1")
        .replace(
            "checkpoint_every = 20",
            "checkpoint_every = 5\nkeep_checkpoints = 3",
        );
    std::fs::write(&teacher_cfg, text).unwrap();
    let distill_cfg = d.join("distill.toml");
    let text = std::fs::read_to_string(root().join("configs/distill-tiny.toml"))
        .unwrap()
        .replace("checkpoint_every = 2", "checkpoint_every = 5")
        .replace(
            "steps = 2\nbatch_size = 4\nlr_g",
            "steps = 15\nbatch_size = 4\nlr_g",
        )
        .replace(
            "variant = \"dmd\"\nsteps = 4",
            "variant = \"dmd2\"\nsteps = 30",
        );
    std::fs::write(&distill_cfg, text).unwrap();
    let (tc, dc) = (teacher_cfg.to_str().unwrap(), distill_cfg.to_str().unwrap());

    let mut reports = Vec::new();
    // The teacher: 60 steps.
    let teacher_cmd = s(&["train-teacher", "--config", tc, "--steps", "60"]);
    let reference = d.join("teacher-ref");
    let t0 = Instant::now();
    run_ok(
        &[
            teacher_cmd.clone(),
            s(&["--out", reference.to_str().unwrap()]),
        ]
        .concat(),
    );
    let full = t0.elapsed();
    let killed = d.join("teacher-killed");
    let r = campaign(
        &teacher_cmd,
        &killed,
        &["teacher.safetensors"],
        5,
        60,
        full,
        kills,
        &mut rng,
    );
    same_run(&reference, &killed, &["loss", "grad_norm"]);
    reports.push(("teacher", r));

    // APT and DMD2 from the reference teacher, after pairs and the consistency init.
    let teacher = reference.join("teacher.safetensors");
    let tp = teacher.to_str().unwrap();
    let pairs = d.join("pairs");
    run_ok(&s(&[
        "distill",
        "pairs",
        "--config",
        dc,
        "--teacher",
        tp,
        "--out",
        pairs.to_str().unwrap(),
    ]));
    let cons = d.join("consistency");
    run_ok(&s(&[
        "distill",
        "consistency",
        "--config",
        dc,
        "--teacher",
        tp,
        "--pairs",
        pairs.to_str().unwrap(),
        "--out",
        cons.to_str().unwrap(),
    ]));
    let init = cons.join("generator.safetensors");
    let ip = init.to_str().unwrap();
    for (name, cmd, total, fields) in [
        (
            "apt",
            s(&[
                "distill",
                "apt",
                "--config",
                dc,
                "--teacher",
                tp,
                "--init",
                ip,
            ]),
            30,
            vec!["d_loss", "penalty", "logit_fake"],
        ),
        (
            "dmd2",
            s(&[
                "distill",
                "dmd",
                "--config",
                dc,
                "--teacher",
                tp,
                "--init",
                ip,
            ]),
            30,
            vec!["fake_loss", "dm_loss", "gen_std"],
        ),
    ] {
        let reference = d.join(format!("{name}-ref"));
        let t0 = Instant::now();
        run_ok(&[cmd.clone(), s(&["--out", reference.to_str().unwrap()])].concat());
        let full = t0.elapsed();
        let killed = d.join(format!("{name}-killed"));
        let r = campaign(
            &cmd,
            &killed,
            &["generator.safetensors"],
            5,
            total,
            full,
            kills,
            &mut rng,
        );
        same_run(&reference, &killed, &fields);
        reports.push((name, r));
    }
    for (name, r) in &reports {
        eprintln!(
            "{name}: {} kills survived ({} during a checkpoint write), steps lost per kill {:?} (max {}), resumed run bit-identical, {} checkpoints in history at most",
            r.kills, r.during_write, r.lost, r.max_lost, r.history
        );
    }
}
