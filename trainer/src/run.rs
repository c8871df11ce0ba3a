//! What every training loop in Flick shares — the teacher, the probe, consistency distillation
//! and APT: the run folder (created; a folder that holds a run is never overwritten without
//! `--resume`; the state file read back on resume), the metrics log (`metrics.jsonl`, emptied
//! by a fresh run, cut back to the resumed step on resume so no line is repeated), progress (a
//! bar on a terminal, plain lines in logs), throughput windows, the EMA warm-up and the curves.
//! The loops keep only what differs: their models, losses, optimisers and state contents.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::*;
use flick_core::checkpoint::{NamedTensors, read_safetensors};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The state file of a run folder (models, optimiser moments, step).
pub fn state_path(out: &Path) -> PathBuf {
    out.join("state.safetensors")
}

/// A state file read back for `--resume`: its tensors and metadata.
pub struct Saved {
    pub tensors: NamedTensors,
    pub meta: BTreeMap<String, String>,
}

impl Saved {
    /// The step the state was saved at.
    pub fn step(&self) -> anyhow::Result<u64> {
        Ok(self.meta.get("step").context("state lacks step")?.parse()?)
    }

    /// A numeric metadata field, `default` when absent (states written before it existed).
    pub fn number_or(&self, key: &str, default: u64) -> u64 {
        self.meta
            .get(key)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// A metadata field that must be there.
    pub fn field(&self, key: &str) -> anyhow::Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("state lacks {key}"))
    }
}

/// Open the run folder `out` (created if missing). With `resume` and a state file there, the
/// state is returned; with `resume` and none, the run starts from step 0 (said on stderr);
/// without `resume`, a folder that already holds a run is refused.
pub fn open(out: &Path, resume: bool) -> anyhow::Result<Option<Saved>> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    let state = state_path(out);
    match (resume, state.exists()) {
        (true, true) => {
            let (tensors, meta) = read_safetensors(&state)
                .with_context(|| format!("--resume: cannot read {}", state.display()))?;
            Ok(Some(Saved { tensors, meta }))
        }
        (true, false) => {
            eprintln!(
                "--resume: no state in {}, starting from step 0",
                out.display()
            );
            Ok(None)
        }
        (false, true) => bail!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            out.display()
        ),
        (false, false) => Ok(None),
    }
}

/// Write the configuration a run actually uses (defaults filled in) as `config.resolved.toml`.
pub fn write_config(out: &Path, cfg: &impl Serialize) -> anyhow::Result<()> {
    write_atomic(
        &out.join("config.resolved.toml"),
        toml::to_string_pretty(cfg)?.as_bytes(),
    )
}

/// Write a run file through a temporary file and a rename: a process killed mid-write leaves
/// the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {} (disk full or read-only?)", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Where a run keeps its earlier checkpoints (see [`keep_history`]).
pub fn history_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// After a state was written at `step`: with `keep` > 1, keep it also as
/// `checkpoints/state-<step>.safetensors` (a hard link: no second copy on disk until the state
/// is replaced) and delete the oldest so that at most `keep` checkpoints exist, the current
/// `state.safetensors` among them — never it. To go back to an earlier one, copy it over
/// `state.safetensors` and `--resume`.
pub fn keep_history(out: &Path, step: u64, keep: u64) -> anyhow::Result<()> {
    if keep <= 1 {
        return Ok(());
    }
    let dir = history_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copy = dir.join(format!("state-{step:09}.safetensors"));
    let _ = std::fs::remove_file(&copy);
    std::fs::hard_link(state_path(out), &copy)
        .or_else(|_| std::fs::copy(state_path(out), &copy).map(|_| ()))
        .with_context(|| format!("cannot keep {}", copy.display()))?;
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state-") && n.ends_with(".safetensors"))
        })
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(keep as usize);
    for old in &kept[..excess] {
        if *old != copy {
            std::fs::remove_file(old)
                .with_context(|| format!("cannot delete {}", old.display()))?;
        }
    }
    Ok(())
}

/// The EMA decay after `k` updates counted from the EMA's start: the warm-up of timm/diffusers,
/// `min(target, (1 + k)/(10 + k))`, so early on the average does not cling to the initialisation.
pub fn ema_decay(target: f32, k: u64) -> f32 {
    target.min((1.0 + k as f32) / (10.0 + k as f32))
}

/// Keep the lines of a metrics log up to `step` (a resumed run would otherwise repeat the lines
/// logged after its checkpoint).
pub fn truncate_metrics(path: &Path, step: u64) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

/// One field of a run's `metrics.jsonl` as `(step, value)`, in the order logged (lines without
/// the field are skipped; no log is an empty series).
pub fn column(out: &Path, field: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v[field].as_f64()?)))
        .collect()
}

/// Plot one field of a run's `metrics.jsonl` (its absolute value, on a log scale) to `png` in
/// the run folder.
pub fn plot(out: &Path, field: &str, png: &str) -> anyhow::Result<()> {
    let points: Vec<(u64, f32)> = column(out, field)
        .into_iter()
        .map(|(s, v)| (s, v.abs() as f32))
        .collect();
    crate::plot::plot_curve(&out.join(png), &points)
}

/// A progress bar of `len` steps standing at `pos` (hidden when `quiet`; indicatif draws nothing
/// without a terminal — see [`log_line`]).
pub fn bar(quiet: bool, len: u64, pos: u64) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid progress template"),
    );
    bar.set_position(pos);
    bar
}

/// A plain progress line where there is no terminal for the bar (logs, nohup).
pub fn log_line(quiet: bool, line: &str) {
    if !quiet && !std::io::stderr().is_terminal() {
        eprintln!("{line}");
    }
}

/// The metrics log and progress display of one run.
pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
    terminal: bool,
    metrics: File,
    started: Instant,
    window: (Instant, usize),
}

impl Progress {
    /// Start logging a run of `total` steps at `step`: a fresh run (step 0) empties the log, a
    /// resumed one cuts it back to `step`. `quiet` hides the bar and the plain log lines.
    pub fn start(out: &Path, total: u64, step: u64, quiet: bool) -> anyhow::Result<Self> {
        let path = out.join("metrics.jsonl");
        if step == 0 {
            let _ = std::fs::remove_file(&path);
        } else {
            truncate_metrics(&path, step)?;
        }
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            bar: bar(quiet, total, step),
            quiet,
            terminal: std::io::stderr().is_terminal(),
            metrics,
            started: Instant::now(),
            window: (Instant::now(), 0),
        })
    }

    /// A step finished, bringing the run to `step`, on `clips` clips.
    pub fn advance(&mut self, step: u64, clips: usize) {
        self.window.1 += clips;
        self.bar.set_position(step);
    }

    /// Clips per second since the last logged line.
    pub fn clips_per_s(&self) -> f32 {
        self.window.1 as f32 / self.window.0.elapsed().as_secs_f32()
    }

    /// Seconds since this invocation started.
    pub fn elapsed_s(&self) -> f32 {
        self.started.elapsed().as_secs_f32()
    }

    /// Append `record` to the metrics log and show it: `msg` beside the bar on a terminal,
    /// `line` as a plain line otherwise (logs, nohup). Starts a new throughput window.
    pub fn log(&mut self, record: &impl Serialize, msg: String, line: &str) -> anyhow::Result<()> {
        writeln!(self.metrics, "{}", serde_json::to_string(record)?)?;
        self.bar.set_message(msg);
        if !self.quiet && !self.terminal {
            eprintln!("{line}");
        }
        self.window = (Instant::now(), 0);
        Ok(())
    }

    /// A message that must not be lost (a warning, a measurement): above the bar on a terminal,
    /// a plain line otherwise — also when `quiet`.
    pub fn say(&self, line: &str) {
        if self.terminal && !self.quiet {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// A new total step count (a time budget fixed it).
    pub fn set_length(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// The run is over (or stopped): finish the bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// Consecutive non-finite steps after which a loop stops, where its config does not say.
/// Seeds the backend's random stream with `seed` and runs `init` (model or head
/// initialisation) in one turn on it (see [`flick_core::params::with_backend_rng`]), so the
/// initial weights are the ones the seed names whatever else the process is doing.
pub fn seeded<T>(device: &Device, seed: u64, init: impl FnOnce() -> T) -> T {
    flick_core::params::with_backend_rng(device, Some(seed), init)
}

pub fn default_max_bad_steps() -> u64 {
    20
}

/// Checkpoints a loop keeps, where its config does not say: the current state only.
pub fn default_keep_checkpoints() -> u64 {
    1
}

/// The non-finite guard every training loop runs its updates through: an update whose loss or
/// gradient is not finite is not taken (the optimiser leaves weights, moments and its step count
/// as they were), counted and said; `max_bad` of them in a row stop the run with an error that
/// says what happened and what to try. Nothing is written then, so the run folder keeps its last
/// good checkpoint, and `--resume` (with the change tried) continues from it.
pub struct Guard {
    what: &'static str,
    hint: &'static str,
    max_bad: u64,
    consecutive: u64,
    /// Updates skipped so far (over the whole run, when the count is restored on resume).
    pub skipped: u64,
}

impl Guard {
    /// A guard for the updates of `what` (e.g. "generator"), `hint` naming the setting to
    /// change (e.g. "a lower apt lr_g"), `skipped` already counted by the run before a resume.
    pub fn new(what: &'static str, hint: &'static str, max_bad: u64, skipped: u64) -> Self {
        Self {
            what,
            hint,
            max_bad: max_bad.max(1),
            consecutive: 0,
            skipped,
        }
    }

    /// Record the update at `step` (`taken`: the loss and gradient were finite and the update
    /// was made; `loss`: the value logged). An error once `max_bad` in a row were skipped, naming
    /// the last checkpoint (`saved_step`) in `out`.
    pub fn check(
        &mut self,
        step: u64,
        taken: bool,
        loss: f32,
        progress: &Progress,
        out: &Path,
        saved_step: u64,
    ) -> anyhow::Result<()> {
        if taken {
            self.consecutive = 0;
            return Ok(());
        }
        self.skipped += 1;
        self.consecutive += 1;
        progress.say(&format!(
            "step {step}: non-finite {} loss or gradient (loss {loss}), update skipped ({} so far)",
            self.what, self.skipped
        ));
        if self.consecutive >= self.max_bad {
            bail!(
                "training diverged: {} consecutive {} updates with a non-finite loss or gradient (steps {}–{step}). The last good checkpoint (step {saved_step}) is intact in {}; try {} and continue it with --resume",
                self.consecutive,
                self.what,
                step + 1 - self.consecutive,
                out.display(),
                self.hint,
            );
        }
        Ok(())
    }
}

/// Steps whose gradients are made non-finite on purpose, per run folder (see
/// [`inject_nonfinite`]).
static INJECTED: std::sync::Mutex<Vec<(PathBuf, std::ops::Range<u64>)>> =
    std::sync::Mutex::new(Vec::new());

/// Testing hook: the updates of the run in `out` at `steps` get a non-finite gradient, so the
/// [`Guard`] and the optimiser's skip can be checked on a real run. The environment variable
/// `FLICK_INJECT_NONFINITE` (`N` or `A..B`) does the same for every run of a `flick` process.
#[doc(hidden)]
pub fn inject_nonfinite(out: &Path, steps: std::ops::Range<u64>) {
    INJECTED
        .lock()
        .expect("the injection list")
        .push((out.to_path_buf(), steps));
}

/// Testing hook: undo [`inject_nonfinite`] for the run in `out`.
#[doc(hidden)]
pub fn clear_nonfinite(out: &Path) {
    INJECTED
        .lock()
        .expect("the injection list")
        .retain(|(o, _)| o != out);
}

fn injected(out: &Path, step: u64) -> bool {
    let from_env = std::env::var("FLICK_INJECT_NONFINITE")
        .ok()
        .is_some_and(|v| match v.split_once("..") {
            Some((a, b)) => match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) => (a..b).contains(&step),
                _ => false,
            },
            None => v.trim().parse::<u64>() == Ok(step),
        });
    from_env
        || INJECTED
            .lock()
            .expect("the injection list")
            .iter()
            .any(|(o, r)| o == out && r.contains(&step))
}

/// Apply the testing hook (see [`inject_nonfinite`]) to the gradients and loss of the update at
/// `step` of the run in `out`: one gradient becomes NaN, and so does the loss (a value, or a
/// tensor not read yet).
pub fn poison<L: Clone + std::ops::Mul<f32, Output = L>>(
    out: &Path,
    step: u64,
    grads: &mut HashMap<String, Tensor<1>>,
    loss: &mut L,
) {
    if !injected(out, step) {
        return;
    }
    if let Some(g) = grads.values_mut().next() {
        *g = g.clone() * f32::NAN;
    }
    *loss = loss.clone() * f32::NAN;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flick-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[derive(Serialize)]
    struct Line {
        step: u64,
        loss: f32,
    }

    #[test]
    fn a_fresh_run_empties_the_log_and_a_resumed_one_cuts_it_back() {
        let out = tmp("log");
        assert!(open(&out, false).unwrap().is_none());
        let mut p = Progress::start(&out, 10, 0, true).unwrap();
        for step in 1..=6 {
            p.advance(step, 4);
            p.log(
                &Line {
                    step,
                    loss: 1.0 / step as f32,
                },
                String::new(),
                "",
            )
            .unwrap();
        }
        drop(p);
        let steps =
            |out: &Path| -> Vec<u64> { column(out, "loss").into_iter().map(|(s, _)| s).collect() };
        assert_eq!(steps(&out), vec![1, 2, 3, 4, 5, 6]);
        // Resumed from a checkpoint at step 4: lines 5 and 6 would be logged again.
        let mut p = Progress::start(&out, 10, 4, true).unwrap();
        p.log(&Line { step: 5, loss: 0.1 }, String::new(), "")
            .unwrap();
        drop(p);
        assert_eq!(steps(&out), vec![1, 2, 3, 4, 5]);
        plot(&out, "loss", "loss.png").unwrap();
        assert!(out.join("loss.png").exists());
        // A fresh start empties it.
        drop(Progress::start(&out, 10, 0, true).unwrap());
        assert!(steps(&out).is_empty());
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_folder_holding_a_run_is_not_overwritten_without_resume() {
        let out = tmp("open");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(state_path(&out), b"not a state").unwrap();
        let err = open(&out, false).err().expect("refused").to_string();
        assert!(err.contains("already holds a run"), "{err}");
        // With --resume it is read, and an unreadable one is an error that names the file.
        let err = format!("{:#}", open(&out, true).err().expect("unreadable"));
        assert!(err.contains("state.safetensors"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
        // --resume in an empty folder starts from step 0.
        assert!(open(&out, true).unwrap().is_none());
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn history_keeps_the_newest_checkpoints_and_never_the_current_one_only() {
        let out = tmp("history");
        std::fs::create_dir_all(&out).unwrap();
        for step in [10u64, 20, 30, 40] {
            // Replaced as the loops replace it: a new file renamed over the old.
            write_atomic(&state_path(&out), format!("state {step}").as_bytes()).unwrap();
            keep_history(&out, step, 3).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(history_dir(&out))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "state-000000020.safetensors",
                "state-000000030.safetensors",
                "state-000000040.safetensors"
            ]
        );
        // Each holds what the state held when it was kept; the current state is untouched.
        let read = |n: &str| std::fs::read_to_string(history_dir(&out).join(n)).unwrap();
        assert_eq!(read("state-000000020.safetensors"), "state 20");
        assert_eq!(
            std::fs::read_to_string(state_path(&out)).unwrap(),
            "state 40"
        );
        // keep = 1: only the state, no history written.
        let other = tmp("history1");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(state_path(&other), "s").unwrap();
        keep_history(&other, 5, 1).unwrap();
        assert!(!history_dir(&other).exists());
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn the_ema_warms_up_to_its_target() {
        assert!((ema_decay(0.999, 0) - 0.1).abs() < 1e-6);
        assert!(ema_decay(0.999, 90) < 0.95);
        assert_eq!(ema_decay(0.999, 1_000_000), 0.999);
    }
}
