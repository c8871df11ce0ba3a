//! The viewer without its UI: settings (persisted between runs), the models on offer, the jobs
//! in flight and their results (the history), and playback — the one frame index every clip of
//! the grid shows. The egui app draws this state and turns clicks into calls here; the tests
//! drive it directly.

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Event, ExploreJob, Job, ModelSource, Request};
use flick_core::generate::LatentPoint;
use flick_core::video::Video;
use web_time::Instant;

/// The most seeds one generation shows as a grid.
pub const MAX_BATCH: usize = 8;
/// The most Euler steps the UI offers for a teacher.
pub const MAX_STEPS: usize = 100;

/// What playback does at the last frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoopMode {
    /// Back to the first frame.
    Loop,
    /// Play backwards to the first frame, then forwards again.
    PingPong,
    /// Stop at the last frame.
    Once,
}

impl LoopMode {
    pub const ALL: [LoopMode; 3] = [LoopMode::Loop, LoopMode::PingPong, LoopMode::Once];
    pub fn label(self) -> &'static str {
        match self {
            LoopMode::Loop => "loop",
            LoopMode::PingPong => "ping-pong",
            LoopMode::Once => "once",
        }
    }
}

/// What the explorer's control moves over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExploreMode {
    /// A slider between two ends: (prompt, seed) and (second prompt, second seed).
    Line,
    /// A square pad over four seeds of the prompt (`seed` … `seed + 3` at its corners).
    Pad,
}

/// Everything the user set, saved between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub prompt: String,
    pub seed: u64,
    /// Euler steps for a teacher (a one-step generator always takes one).
    pub steps: usize,
    pub guidance: f32,
    /// Seeds `seed, seed + 1, …` generated together and shown as a grid.
    pub batch: usize,
    /// Label of the selected model.
    pub model: String,
    /// Checkpoint files the user opened (offered again on the next run).
    pub opened: Vec<String>,
    /// Nearest-neighbour (true) or linear magnification.
    pub nearest: bool,
    pub fps: f32,
    pub loop_mode: LoopMode,
    /// Show the one-step generator and the teacher side by side on the same prompt and seeds.
    pub compare: bool,
    /// Displayed clip size in points.
    pub clip_size: f32,
    /// The explorer is shown.
    pub explore: bool,
    pub explore_mode: ExploreMode,
    /// The line's second end: its prompt (empty: the same prompt) and seed.
    pub explore_prompt_b: String,
    pub explore_seed_b: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prompt: "a large red circle moving left on black".into(),
            seed: 7,
            steps: 25,
            guidance: 2.0,
            batch: 4,
            model: String::new(),
            opened: Vec::new(),
            nearest: true,
            fps: 8.0,
            loop_mode: LoopMode::Loop,
            compare: false,
            clip_size: 160.0,
            explore: false,
            explore_mode: ExploreMode::Line,
            explore_prompt_b: String::new(),
            explore_seed_b: 8,
        }
    }
}

/// A model the engine has loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    pub label: String,
    /// `teacher` or `generator`.
    pub kind: String,
    /// Where it came from (a path, or a name for bytes).
    pub origin: String,
    pub default_steps: usize,
    pub default_guidance: f32,
    /// Frames × height × width of its clips.
    pub shape: [usize; 3],
}

impl ModelEntry {
    pub fn one_step(&self) -> bool {
        self.kind == "generator"
    }
}

/// One row of clips: a model at some steps and guidance, one clip per seed.
#[derive(Clone, Debug)]
pub struct Row {
    pub model: String,
    pub steps: usize,
    pub guidance: f32,
    /// Filled when its job finishes.
    pub clips: Vec<Video>,
    /// Wall-clock seconds per clip of its job (the whole batch's time divided by its clips).
    pub secs_per_clip: Option<f64>,
    /// Seconds from the click to this row's clips being ready.
    pub latency: Option<f64>,
    pub job: u64,
    pub error: Option<String>,
}

/// One click of Generate: a prompt, its seeds, and one row (or two when comparing).
#[derive(Clone, Debug)]
pub struct Generation {
    pub id: u64,
    pub prompt: String,
    pub seeds: Vec<u64>,
    pub rows: Vec<Row>,
}

impl Generation {
    pub fn done(&self) -> bool {
        self.rows
            .iter()
            .all(|r| !r.clips.is_empty() || r.error.is_some())
    }
    /// Frames per clip (0 until a row has clips).
    pub fn frames(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|r| r.clips.first())
            .map(|v| v.frames)
            .max()
            .unwrap_or(0)
    }
}

/// The frame every clip shows, and whether it advances by itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Playback {
    pub frame: usize,
    pub playing: bool,
    /// Ping-pong: currently going backwards.
    pub backwards: bool,
    /// Seconds accumulated toward the next frame.
    carry: f64,
}

impl Playback {
    /// Advance by `dt` seconds at `fps` over `frames` frames.
    pub fn tick(&mut self, dt: f64, fps: f32, frames: usize, mode: LoopMode) {
        if !self.playing || frames == 0 || fps <= 0.0 {
            return;
        }
        self.carry += dt;
        let period = 1.0 / fps as f64;
        while self.carry >= period {
            self.carry -= period;
            self.advance(frames, mode);
            if !self.playing {
                self.carry = 0.0;
                break;
            }
        }
    }

    fn advance(&mut self, frames: usize, mode: LoopMode) {
        let last = frames - 1;
        match mode {
            LoopMode::Loop => {
                self.frame = if self.frame >= last {
                    0
                } else {
                    self.frame + 1
                }
            }
            LoopMode::Once => {
                if self.frame >= last {
                    self.frame = last;
                    self.playing = false;
                } else {
                    self.frame += 1;
                }
            }
            LoopMode::PingPong => {
                if last == 0 {
                    self.frame = 0;
                } else if self.backwards {
                    if self.frame == 0 {
                        self.backwards = false;
                        self.frame = 1;
                    } else {
                        self.frame -= 1;
                    }
                } else if self.frame >= last {
                    self.backwards = true;
                    self.frame = last - 1;
                } else {
                    self.frame += 1;
                }
            }
        }
    }

    /// Step one frame forward or back (← →), wrapping around; pauses playback.
    pub fn step(&mut self, delta: i64, frames: usize) {
        if frames == 0 {
            return;
        }
        self.playing = false;
        self.frame = (self.frame as i64 + delta).rem_euclid(frames as i64) as usize;
    }

    /// Show frame `frame` (the timeline slider).
    pub fn scrub(&mut self, frame: usize, frames: usize) {
        self.frame = frame.min(frames.saturating_sub(1));
        self.carry = 0.0;
    }

    pub fn toggle(&mut self) {
        self.playing = !self.playing;
    }
}

/// The live explorer: where the hand is, the clip on screen and where it was made. One request
/// is in flight at a time; when it comes back and the hand has moved on, the next request is for
/// where the hand is *now* — the positions passed over meanwhile are never computed, so the clip
/// follows the hand however slow the model.
#[derive(Debug, Default)]
pub struct Explorer {
    /// Where the control is: the slider's value in `at[0]`, or the pad's (u, v).
    pub at: [f32; 2],
    /// The clip on screen, and the request it answers.
    pub clip: Option<(ExploreJob, Video)>,
    /// Clips made since the explorer was opened.
    pub made: usize,
    /// The last error (a failed request is not repeated until something changes).
    pub error: Option<String>,
    in_flight: Option<ExploreJob>,
    /// The last request sent (not sent again while nothing changed).
    last_sent: Option<ExploreJob>,
    /// When recent clips arrived (for the clips/s readout).
    arrivals: std::collections::VecDeque<Instant>,
}

impl Explorer {
    /// Clips per second over the last two seconds (while the hand moves, how fast the clip
    /// follows it); `None` with fewer than two clips in that time.
    pub fn rate(&self) -> Option<f64> {
        let now = Instant::now();
        let recent: Vec<&Instant> = self
            .arrivals
            .iter()
            .filter(|t| now.duration_since(**t).as_secs_f64() < 2.0)
            .collect();
        let (first, last) = (recent.first()?, recent.last()?);
        let span = last.duration_since(**first).as_secs_f64();
        (recent.len() >= 2 && span > 0.0).then(|| (recent.len() - 1) as f64 / span)
    }

    /// A request is being computed.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// The whole viewer state.
#[derive(Debug, Default)]
pub struct ViewerState {
    pub settings: Settings,
    pub models: Vec<ModelEntry>,
    /// Newest last.
    pub history: Vec<Generation>,
    /// The generation on screen (index into `history`).
    pub shown: Option<usize>,
    /// The clip selected for export: (row, clip).
    pub selected: (usize, usize),
    pub playback: Playback,
    /// Step progress of the job in flight: (job, step, steps).
    pub progress: Option<(u64, usize, usize)>,
    /// The last error, shown until the next action.
    pub error: Option<String>,
    /// Models being loaded: their labels.
    pub loading: Vec<String>,
    /// The stage each loading model is at ("downloading 40%", "warming up").
    pub load_stage: std::collections::HashMap<String, String>,
    /// What generates, once the engine says (the browser's worker picks its device late).
    pub backend: Option<String>,
    /// Something the user should know about the device (the CPU fallback), shown until closed.
    pub notice: Option<String>,
    pub explorer: Explorer,
    next_id: u64,
}

impl ViewerState {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Default::default()
        }
    }

    pub fn model(&self, label: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.label == label)
    }

    /// The selected model (the first loaded one if the saved choice is gone).
    pub fn current_model(&self) -> Option<&ModelEntry> {
        self.model(&self.settings.model).or(self.models.first())
    }

    /// A job is in flight.
    pub fn busy(&self) -> bool {
        self.history.iter().any(|g| !g.done())
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Ask the engine to load a checkpoint. The label is the file's stem, made unique.
    pub fn open_model(&mut self, engine: &mut dyn Engine, source: ModelSource) {
        let stem = source.name();
        let mut label = stem.clone();
        let mut k = 2;
        while self.models.iter().any(|m| m.label == label) || self.loading.contains(&label) {
            label = format!("{stem} ({k})");
            k += 1;
        }
        self.loading.push(label.clone());
        engine.send(Request::Load { label, source });
    }

    /// Start a generation with the current settings: one row with the selected model, or with
    /// `compare` the one-step generator at 1 step beside a teacher at the chosen steps.
    pub fn generate(&mut self, engine: &mut dyn Engine) -> Result<u64, String> {
        self.error = None;
        let s = &self.settings;
        let prompt = s.prompt.trim().to_string();
        if self.busy() {
            return Err("a generation is still running".into());
        }
        let Some(model) = self.current_model().cloned() else {
            return Err(if self.loading.is_empty() {
                "no model loaded: open a .safetensors checkpoint".into()
            } else {
                "the model is still loading".into()
            });
        };
        let batch = s.batch.clamp(1, MAX_BATCH);
        let seeds: Vec<u64> = (0..batch as u64).map(|i| s.seed.wrapping_add(i)).collect();
        let plan: Vec<(ModelEntry, usize, f32)> = if s.compare {
            let one = self.models.iter().find(|m| m.one_step()).cloned();
            let teacher = if model.one_step() {
                self.models.iter().find(|m| !m.one_step()).cloned()
            } else {
                Some(model.clone())
            };
            match (one, teacher) {
                (Some(g), Some(t)) => vec![
                    (g.clone(), 1, g.default_guidance),
                    (t, s.steps.clamp(1, MAX_STEPS), s.guidance),
                ],
                _ => return Err("compare needs a one-step generator and a teacher loaded".into()),
            }
        } else if model.one_step() {
            vec![(model.clone(), 1, model.default_guidance)]
        } else {
            vec![(model.clone(), s.steps.clamp(1, MAX_STEPS), s.guidance)]
        };
        let id = self.next();
        let mut rows = Vec::new();
        for (m, steps, guidance) in plan {
            let job = self.next();
            engine.send(Request::Generate(Job {
                id: job,
                model: m.label.clone(),
                prompts: vec![prompt.clone(); seeds.len()],
                seeds: seeds.clone(),
                steps,
                guidance,
            }));
            rows.push(Row {
                model: m.label,
                steps,
                guidance,
                clips: Vec::new(),
                secs_per_clip: None,
                latency: None,
                job,
                error: None,
            });
        }
        self.history.push(Generation {
            id,
            prompt,
            seeds,
            rows,
        });
        self.shown = Some(self.history.len() - 1);
        self.selected = (0, 0);
        self.playback.scrub(0, 1);
        Ok(id)
    }

    /// The explorer's request for where its control is now: the current model (a teacher at the
    /// chosen steps and guidance, a one-step generator at one step) and the corners — the line's
    /// two ends, or the pad's four seeds of the prompt. `None` without a model.
    pub fn explore_request(&self) -> Option<ExploreJob> {
        let model = self.current_model()?;
        let s = &self.settings;
        let prompt = s.prompt.trim().to_string();
        let corners = match s.explore_mode {
            ExploreMode::Line => {
                let b = s.explore_prompt_b.trim();
                let b = if b.is_empty() {
                    prompt.clone()
                } else {
                    b.to_string()
                };
                vec![(prompt, s.seed), (b, s.explore_seed_b)]
            }
            ExploreMode::Pad => (0..4u64)
                .map(|k| (prompt.clone(), s.seed.wrapping_add(k)))
                .collect(),
        };
        let at = self.explorer.at.map(|a| {
            if a.is_finite() {
                a.clamp(0.0, 1.0)
            } else {
                0.0
            }
        });
        let (steps, guidance) = if model.one_step() {
            (1, model.default_guidance)
        } else {
            (s.steps.clamp(1, MAX_STEPS), s.guidance)
        };
        Some(ExploreJob {
            id: 0,
            model: model.label.clone(),
            point: LatentPoint { corners, at },
            steps,
            guidance,
        })
    }

    /// Move the explorer's control (clamped to [0, 1]); the clip follows on the next
    /// [`Self::pump_explore`].
    pub fn explore_to(&mut self, at: [f32; 2]) {
        self.explorer.at = at.map(|a| {
            if a.is_finite() {
                a.clamp(0.0, 1.0)
            } else {
                0.0
            }
        });
    }

    /// Send the explorer's request for where its control is now, unless one is in flight or
    /// that exact request was the last one sent. Call every frame while the explorer is shown.
    pub fn pump_explore(&mut self, engine: &mut dyn Engine) {
        if self.explorer.in_flight.is_some() || !self.loading.is_empty() {
            return;
        }
        let Some(mut want) = self.explore_request() else {
            return;
        };
        let same = |a: &ExploreJob, b: &ExploreJob| {
            a.model == b.model
                && a.point == b.point
                && a.steps == b.steps
                && a.guidance == b.guidance
        };
        if self
            .explorer
            .last_sent
            .as_ref()
            .is_some_and(|l| same(l, &want))
        {
            return;
        }
        want.id = self.next();
        self.explorer.in_flight = Some(want.clone());
        self.explorer.last_sent = Some(want.clone());
        engine.send(Request::Explore(want));
    }

    /// Take in what the engine reports.
    pub fn apply(&mut self, event: Event) {
        if let Event::Done { job, .. } | Event::Failed { job, .. } = &event
            && self
                .explorer
                .in_flight
                .as_ref()
                .is_some_and(|j| j.id == *job)
        {
            let request = self.explorer.in_flight.take().expect("checked");
            match event {
                Event::Done { mut clips, .. } if !clips.is_empty() => {
                    self.explorer.clip = Some((request, clips.swap_remove(0)));
                    self.explorer.made += 1;
                    self.explorer.error = None;
                    self.explorer.arrivals.push_back(Instant::now());
                    while self.explorer.arrivals.len() > 64 {
                        self.explorer.arrivals.pop_front();
                    }
                }
                Event::Failed { error, .. } => self.explorer.error = Some(error),
                _ => self.explorer.error = Some("the engine sent no clip".into()),
            }
            return;
        }
        match event {
            Event::Loaded {
                label,
                kind,
                default_steps,
                default_guidance,
                shape,
                origin,
            } => {
                self.load_stage.remove(&label);
                self.loading.retain(|l| *l != label);
                let first = self.models.is_empty();
                let entry = ModelEntry {
                    label: label.clone(),
                    kind,
                    origin: origin.clone(),
                    default_steps,
                    default_guidance,
                    shape,
                };
                // Loaded again (the browser's engine moved to another device): same entry.
                match self.models.iter_mut().find(|m| m.label == label) {
                    Some(m) => *m = entry,
                    None => self.models.push(entry),
                }
                // Keep a saved choice whose model is still loading; otherwise the first model
                // loaded becomes the selection.
                if first
                    && self.model(&self.settings.model).is_none()
                    && !self.loading.contains(&self.settings.model)
                {
                    self.settings.model = label;
                }
                if !origin.is_empty()
                    && !origin.starts_with('<')
                    && !self.settings.opened.contains(&origin)
                    && !crate::is_bundled(&origin)
                {
                    self.settings.opened.push(origin);
                }
            }
            Event::Backend { described, notice } => {
                self.backend = Some(described);
                self.notice = notice;
            }
            Event::LoadProgress {
                label,
                stage,
                fraction,
            } => {
                let text = match fraction {
                    Some(f) => format!("{stage} {:.0}%", 100.0 * f.clamp(0.0, 1.0)),
                    None => stage,
                };
                self.load_stage.insert(label, text);
            }
            Event::Fatal { error } => {
                for row in self
                    .history
                    .iter_mut()
                    .flat_map(|g| g.rows.iter_mut())
                    .filter(|r| r.clips.is_empty() && r.error.is_none())
                {
                    row.error = Some(error.clone());
                }
                for label in self.loading.drain(..) {
                    self.load_stage.remove(&label);
                }
                if self.explorer.in_flight.take().is_some() {
                    self.explorer.error = Some(error.clone());
                }
                self.progress = None;
                self.error = Some(error);
            }
            Event::LoadFailed {
                label,
                origin,
                error,
            } => {
                self.load_stage.remove(&label);
                self.loading.retain(|l| *l != label);
                self.settings.opened.retain(|o| *o != origin);
                self.error = Some(format!("could not open {origin}: {error}"));
            }
            Event::Progress { job, step, steps } => self.progress = Some((job, step, steps)),
            Event::Done {
                job,
                clips,
                secs_per_clip,
                latency,
            } => {
                if let Some(row) = self.row_mut(job) {
                    row.clips = clips;
                    row.secs_per_clip = Some(secs_per_clip);
                    row.latency = Some(latency);
                }
                if self.progress.is_some_and(|p| p.0 == job) {
                    self.progress = None;
                }
            }
            Event::Failed { job, error } => {
                if let Some(row) = self.row_mut(job) {
                    row.error = Some(error.clone());
                }
                self.progress = None;
                self.error = Some(error);
            }
        }
    }

    fn row_mut(&mut self, job: u64) -> Option<&mut Row> {
        self.history
            .iter_mut()
            .flat_map(|g| g.rows.iter_mut())
            .find(|r| r.job == job)
    }

    /// Show an earlier generation and put its prompt, seed, model and settings back.
    pub fn restore(&mut self, index: usize) {
        let Some(g) = self.history.get(index) else {
            return;
        };
        self.settings.prompt = g.prompt.clone();
        self.settings.seed = g.seeds[0];
        self.settings.batch = g.seeds.len();
        self.settings.compare = g.rows.len() > 1;
        let main = g.rows.last().expect("a generation has a row");
        if self.model(&main.model).is_some() {
            self.settings.model = main.model.clone();
        }
        if !self.model(&main.model).is_some_and(|m| m.one_step()) {
            self.settings.steps = main.steps;
            self.settings.guidance = main.guidance;
        }
        self.shown = Some(index);
        self.selected = (0, 0);
        let frames = g.frames();
        self.playback.scrub(self.playback.frame, frames);
    }

    /// The generation on screen.
    pub fn current(&self) -> Option<&Generation> {
        self.shown.and_then(|i| self.history.get(i))
    }

    /// The clip selected for export.
    pub fn selected_clip(&self) -> Option<&Video> {
        let g = self.current()?;
        g.rows.get(self.selected.0)?.clips.get(self.selected.1)
    }

    /// Frames of the clips on screen (the explorer's clip before any generation).
    pub fn frames(&self) -> usize {
        match self.current().map_or(0, Generation::frames) {
            0 => self.explorer.clip.as_ref().map_or(0, |(_, v)| v.frames),
            n => n,
        }
    }

    /// Advance playback by `dt` seconds.
    pub fn tick(&mut self, dt: f64) {
        let frames = self.frames();
        self.playback
            .tick(dt, self.settings.fps, frames, self.settings.loop_mode);
    }

    /// A fresh random seed (the dice button).
    pub fn roll_seed(&mut self, entropy: u64) {
        // SplitMix64 of the entropy: any u64 in, a well-spread seed out.
        let mut z = entropy.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.settings.seed = (z ^ (z >> 31)) % 1_000_000;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_modes() {
        let mut p = Playback {
            playing: true,
            ..Default::default()
        };
        let seen: Vec<usize> = (0..6)
            .map(|_| {
                p.tick(0.125, 8.0, 4, LoopMode::Loop);
                p.frame
            })
            .collect();
        assert_eq!(seen, [1, 2, 3, 0, 1, 2]);
        let mut p = Playback {
            playing: true,
            ..Default::default()
        };
        let seen: Vec<usize> = (0..8)
            .map(|_| {
                p.tick(0.125, 8.0, 4, LoopMode::PingPong);
                p.frame
            })
            .collect();
        assert_eq!(seen, [1, 2, 3, 2, 1, 0, 1, 2]);
        let mut p = Playback {
            playing: true,
            ..Default::default()
        };
        p.tick(10.0, 8.0, 4, LoopMode::Once);
        assert_eq!((p.frame, p.playing), (3, false));
        // A slow tick carries over: two half-periods make one frame.
        let mut p = Playback {
            playing: true,
            ..Default::default()
        };
        p.tick(0.0625, 8.0, 4, LoopMode::Loop);
        assert_eq!(p.frame, 0);
        p.tick(0.0625, 8.0, 4, LoopMode::Loop);
        assert_eq!(p.frame, 1);
    }

    #[test]
    fn stepping_wraps_and_pauses() {
        let mut p = Playback {
            playing: true,
            ..Default::default()
        };
        p.step(-1, 8);
        assert_eq!((p.frame, p.playing), (7, false));
        p.step(1, 8);
        assert_eq!(p.frame, 0);
        p.scrub(20, 8);
        assert_eq!(p.frame, 7);
    }

    #[test]
    fn rolled_seeds_differ() {
        let mut s = ViewerState::default();
        s.roll_seed(1);
        let a = s.settings.seed;
        s.roll_seed(2);
        assert_ne!(a, s.settings.seed);
    }

    /// A recording engine: the requests it was sent.
    #[derive(Default)]
    struct Recorder(Vec<Request>);
    impl Engine for Recorder {
        fn send(&mut self, request: Request) {
            self.0.push(request);
        }
        fn poll(&mut self) -> Vec<Event> {
            Vec::new()
        }
    }

    /// While a request is in flight the hand's moves are not queued: when it comes back, one
    /// request goes out, for where the hand is then.
    #[test]
    fn the_explorer_drops_stale_positions() {
        let mut s = ViewerState::default();
        let mut engine = Recorder::default();
        s.apply(Event::Loaded {
            label: "g".into(),
            kind: "generator".into(),
            default_steps: 1,
            default_guidance: 1.0,
            shape: [8, 32, 32],
            origin: "<g>".into(),
        });
        s.pump_explore(&mut engine);
        assert_eq!(engine.0.len(), 1);
        s.pump_explore(&mut engine);
        assert_eq!(engine.0.len(), 1, "one request in flight at a time");
        for a in [0.1, 0.2, 0.3, 0.4] {
            s.explore_to([a, 0.0]);
            s.pump_explore(&mut engine);
        }
        assert_eq!(engine.0.len(), 1);
        let clip = Video {
            frames: 1,
            height: 1,
            width: 1,
            rgba: vec![0; 4],
        };
        let Request::Explore(first) = &engine.0[0] else {
            panic!("an explore request")
        };
        s.apply(Event::Done {
            job: first.id,
            clips: vec![clip.clone()],
            secs_per_clip: 0.1,
            latency: 0.1,
        });
        assert_eq!(s.explorer.made, 1);
        s.pump_explore(&mut engine);
        assert_eq!(engine.0.len(), 2);
        let Request::Explore(next) = &engine.0[1] else {
            panic!("an explore request")
        };
        assert_eq!(next.point.at, [0.4, 0.0], "straight to where the hand is");
        // Nothing changed since: nothing more is sent, also after a failure.
        s.apply(Event::Failed {
            job: next.id,
            error: "boom".into(),
        });
        s.pump_explore(&mut engine);
        assert_eq!(engine.0.len(), 2);
        assert_eq!(s.explorer.error.as_deref(), Some("boom"));
        // Another seed at the second end is another request.
        s.settings.explore_seed_b += 1;
        s.pump_explore(&mut engine);
        assert_eq!(engine.0.len(), 3);
    }

    #[test]
    fn load_stages_backend_notice_and_a_crashed_engine() {
        let mut s = ViewerState::default();
        let mut engine = Recorder::default();
        s.apply(Event::Backend {
            described: "cpu (wasm)".into(),
            notice: Some("no WebGPU".into()),
        });
        assert_eq!(
            (s.backend.as_deref(), s.notice.as_deref()),
            (Some("cpu (wasm)"), Some("no WebGPU"))
        );
        s.open_model(
            &mut engine,
            ModelSource::Url("models/generator-small.safetensors".into()),
        );
        s.open_model(
            &mut engine,
            ModelSource::Url("https://example.org/m/teacher-small.safetensors?x=1".into()),
        );
        assert_eq!(s.loading, ["generator-small", "teacher-small"]);
        s.apply(Event::LoadProgress {
            label: "generator-small".into(),
            stage: "downloading".into(),
            fraction: Some(0.4),
        });
        assert_eq!(s.load_stage["generator-small"], "downloading 40%");
        s.apply(Event::Loaded {
            label: "generator-small".into(),
            kind: "generator".into(),
            default_steps: 1,
            default_guidance: 1.0,
            shape: [8, 32, 32],
            origin: "models/generator-small.safetensors".into(),
        });
        assert!(s.load_stage.is_empty() && s.loading == ["teacher-small"]);
        // Loaded again (the browser engine fell back to the CPU): still one entry.
        s.apply(Event::Loaded {
            label: "generator-small".into(),
            kind: "generator".into(),
            default_steps: 1,
            default_guidance: 1.0,
            shape: [8, 32, 32],
            origin: "models/generator-small.safetensors".into(),
        });
        assert_eq!(s.models.len(), 1);
        assert!(
            s.settings.opened.is_empty(),
            "bundled web models are not remembered as opened: {:?}",
            s.settings.opened
        );
        let id = s.generate(&mut engine).unwrap();
        assert!(s.busy());
        s.apply(Event::Fatal {
            error: "the worker crashed".into(),
        });
        // Nothing waits for an engine that is gone: the job failed, loading stopped.
        assert!(!s.busy() && s.loading.is_empty());
        assert_eq!(
            s.history.iter().find(|g| g.id == id).unwrap().rows[0]
                .error
                .as_deref(),
            Some("the worker crashed")
        );
        assert_eq!(engine.0.len(), 3);
    }
}
