//! The egui app: controls on top, the clip grid in the middle, the timeline and export below,
//! the history on the right. Everything it shows lives in [`ViewerState`]; this file only draws
//! it and turns input into calls on it. [`ViewerApp::show`] is the whole UI, so the eframe shell
//! and the headless tests run the same code.

use std::collections::HashMap;

use egui::{Color32, ColorImage, Key, RichText, TextureHandle, TextureOptions, Vec2};

use crate::engine::{Engine, ModelSource};
use crate::platform;
use crate::state::{ExploreMode, LoopMode, MAX_BATCH, MAX_STEPS, Settings, ViewerState};

/// One texture per frame of every clip on screen, made when first drawn.
#[derive(Default)]
struct Textures {
    nearest: bool,
    frames: HashMap<(u64, usize, usize, usize), TextureHandle>,
}

impl Textures {
    fn get(
        &mut self,
        ctx: &egui::Context,
        key: (u64, usize, usize, usize),
        video: &flick_core::video::Video,
    ) -> TextureHandle {
        let options = if self.nearest {
            TextureOptions::NEAREST
        } else {
            TextureOptions::LINEAR
        };
        self.frames
            .entry(key)
            .or_insert_with(|| {
                let image = ColorImage::from_rgba_unmultiplied(
                    [video.width, video.height],
                    video.frame(key.3),
                );
                ctx.load_texture(
                    format!("clip-{}-{}-{}-{}", key.0, key.1, key.2, key.3),
                    image,
                    options,
                )
            })
            .clone()
    }
}

/// Scripted runs (the screenshot test): generate on start, then save a screenshot of the window
/// once the clips are on screen, and close.
#[derive(Clone, Debug, Default)]
pub struct Automation {
    pub generate_on_start: bool,
    pub screenshot: Option<std::path::PathBuf>,
    frames_shown: usize,
    requested: bool,
}

impl Automation {
    pub fn screenshot_to(path: std::path::PathBuf) -> Self {
        Self {
            generate_on_start: true,
            screenshot: Some(path),
            ..Default::default()
        }
    }
}

pub struct ViewerApp {
    pub state: ViewerState,
    engine: Box<dyn Engine>,
    textures: Textures,
    last_time: Option<f64>,
    /// What the generation runs on, shown in the status line.
    pub backend: String,
    /// The fallback "open by path" box.
    path_input: String,
    pub automation: Automation,
    /// Where the first clip was drawn last frame (the screenshot test checks those pixels).
    pub clip_rect: Option<egui::Rect>,
    /// (row, clip, frame) of every clip drawn last frame.
    pub drawn: Vec<(usize, usize, usize)>,
    /// Where the prompt box, the Generate button and the timeline slider were drawn last frame
    /// (the browser test clicks them like a user; see [`Self::status_json`]).
    pub widget_rects: HashMap<&'static str, egui::Rect>,
}

impl ViewerApp {
    /// An app over `engine`, loading `models` (the bundled ones, then what the user opened
    /// before).
    pub fn new(
        settings: Settings,
        mut engine: Box<dyn Engine>,
        backend: String,
        models: Vec<ModelSource>,
    ) -> Self {
        let mut state = ViewerState::new(settings);
        let opened: Vec<ModelSource> = state
            .settings
            .opened
            .iter()
            .map(|p| platform::reopen(p))
            .collect();
        for source in models.into_iter().chain(opened) {
            state.open_model(engine.as_mut(), source);
        }
        Self {
            state,
            engine,
            textures: Textures {
                nearest: true,
                ..Default::default()
            },
            last_time: None,
            backend,
            path_input: String::new(),
            automation: Automation::default(),
            clip_rect: None,
            drawn: Vec::new(),
            widget_rects: HashMap::new(),
        }
    }

    /// Generate with the current settings (as the Generate button does); the generation's id,
    /// or `None` with the reason shown as the error.
    pub fn generate(&mut self) -> Option<u64> {
        match self.state.generate(self.engine.as_mut()) {
            Ok(id) => Some(id),
            Err(e) => {
                self.state.error = Some(e);
                None
            }
        }
    }

    /// Load a model (as Open... does).
    pub fn open_source(&mut self, source: ModelSource) {
        self.state.open_model(self.engine.as_mut(), source);
    }

    fn open(&mut self, source: ModelSource) {
        self.open_source(source);
    }

    /// Open a checkpoint file (the "open by path" box; the file dialog ends here too).
    pub fn open_path(&mut self, path: std::path::PathBuf) {
        self.open(ModelSource::Path(path));
    }

    /// Take in the engine's events and advance playback; call once per frame.
    pub fn update_state(&mut self, ctx: &egui::Context) {
        for picked in platform::picked() {
            match picked {
                Ok(source) => self.open(source),
                Err(error) => self.state.error = Some(error),
            }
        }
        for event in self.engine.poll() {
            self.state.apply(event);
        }
        let now = ctx.input(|i| i.time);
        let dt = self.last_time.map_or(0.0, |t| (now - t).max(0.0));
        self.last_time = Some(now);
        self.state.tick(dt);
        if self.textures.nearest != self.state.settings.nearest {
            self.textures = Textures {
                nearest: self.state.settings.nearest,
                ..Default::default()
            };
        }
        // Keyboard: space plays/pauses, ← → step a frame (not while typing in a text box).
        if !ctx.text_edit_focused() {
            let frames = self.state.frames();
            let (space, left, right) = ctx.input(|i| {
                (
                    i.key_pressed(Key::Space),
                    i.key_pressed(Key::ArrowLeft),
                    i.key_pressed(Key::ArrowRight),
                )
            });
            if space {
                self.state.playback.toggle();
            }
            if left {
                self.state.playback.step(-1, frames);
            }
            if right {
                self.state.playback.step(1, frames);
            }
        }
        if self.state.settings.explore {
            self.state.pump_explore(self.engine.as_mut());
        }
        if self.state.busy() || !self.state.loading.is_empty() || self.state.explorer.busy() {
            ctx.request_repaint_after_secs(0.05);
        } else if self.state.playback.playing {
            ctx.request_repaint_after_secs(0.5 / self.state.settings.fps.max(1.0));
        }
    }

    /// The whole UI.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.update_state(&ctx);
        if self.automation.generate_on_start
            && !self.state.models.is_empty()
            && self.state.loading.is_empty()
        {
            self.automation.generate_on_start = false;
            self.generate();
        }
        egui::Panel::top("controls").show(ui, |ui| self.controls(ui));
        egui::Panel::bottom("timeline").show(ui, |ui| self.timeline(ui));
        egui::Panel::right("history")
            .resizable(true)
            .default_size(220.0)
            .show(ui, |ui| self.history(ui));
        if self.state.settings.explore {
            egui::Panel::left("explore")
                .resizable(true)
                .default_size(self.state.settings.clip_size.max(200.0) + 24.0)
                .show(ui, |ui| self.explorer(ui));
        }
        egui::CentralPanel::default_margins().show(ui, |ui| self.grid(ui));
        self.automate(&ctx);
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let prompt = ui.add(
                egui::TextEdit::singleline(&mut self.state.settings.prompt)
                    .hint_text("describe a clip...")
                    .desired_width(ui.available_width() - 110.0),
            );
            self.widget_rects.insert("prompt", prompt.rect);
            let enter = prompt.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            let busy = self.state.busy();
            let button = ui.add_enabled(
                !busy && !self.state.models.is_empty(),
                egui::Button::new(RichText::new("Generate").strong()),
            );
            self.widget_rects.insert("generate", button.rect);
            let clicked = button.clicked();
            if (enter || clicked) && !busy {
                self.generate();
            }
        });
        ui.horizontal_wrapped(|ui| {
            let s = &mut self.state.settings;
            let l = ui.label("seed");
            ui.add(egui::DragValue::new(&mut s.seed).speed(1.0))
                .labelled_by(l.id);
            if ui.button("random").on_hover_text("a random seed").clicked() {
                let entropy = (ui.input(|i| i.time) * 1e6) as u64 ^ self.state.history.len() as u64;
                self.state.roll_seed(entropy);
            }
            ui.separator();
            let s = &mut self.state.settings;
            let model_label = ui.label("model");
            let current = self
                .state
                .models
                .iter()
                .find(|m| m.label == s.model)
                .or(self.state.models.first())
                .map(|m| {
                    format!(
                        "{} ({})",
                        m.label,
                        if m.one_step() { "one step" } else { "teacher" }
                    )
                });
            egui::ComboBox::from_id_salt("model")
                .selected_text(current.unwrap_or_else(|| "loading...".into()))
                .show_ui(ui, |ui| {
                    for m in &self.state.models {
                        let text = format!(
                            "{} — {}, {}×{}×{}",
                            m.label,
                            if m.one_step() {
                                "one-step generator"
                            } else {
                                "teacher"
                            },
                            m.shape[0],
                            m.shape[1],
                            m.shape[2]
                        );
                        ui.selectable_value(&mut s.model, m.label.clone(), text)
                            .on_hover_text(&m.origin);
                    }
                })
                .response
                .labelled_by(model_label.id);
            let open = ui
                .button("Open...")
                .on_hover_text("open a Flick .safetensors checkpoint");
            self.widget_rects.insert("open", open.rect);
            // Not in a pass egui will discard and run again: the dialog would open twice (and
            // in the browser the second would find the user's activation spent).
            if open.clicked() && !ui.ctx().will_discard() {
                // Native: the dialog answers now; browser: the file arrives later (`picked`).
                if let Some(source) = platform::pick_checkpoint(ui.ctx()) {
                    self.open(source);
                }
            }
            let one_step = self.state.current_model().is_some_and(|m| m.one_step());
            let s = &mut self.state.settings;
            ui.separator();
            ui.add_enabled(
                !one_step || s.compare,
                egui::Slider::new(&mut s.steps, 1..=MAX_STEPS)
                    .text("steps")
                    .logarithmic(true),
            )
            .on_hover_text("Euler steps of the teacher (a one-step generator always takes one)");
            ui.add_enabled(
                !one_step || s.compare,
                egui::Slider::new(&mut s.guidance, 1.0..=8.0).text("guidance"),
            );
            ui.add(egui::Slider::new(&mut s.batch, 1..=MAX_BATCH).text("seeds"));
            ui.checkbox(&mut s.compare, "compare one-step vs teacher");
            let explore = ui.checkbox(&mut s.explore, "explore").on_hover_text(
                "move between seeds and prompts live: the one-step generator follows the slider",
            );
            self.widget_rects.insert("explore", explore.rect);
        });
        ui.horizontal(|ui| {
            ui.label(platform::OPEN_BY_LABEL);
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.path_input)
                    .hint_text(platform::OPEN_BY_HINT)
                    .desired_width(280.0),
            );
            self.widget_rects.insert("address", r.rect);
            if r.lost_focus()
                && ui.input(|i| i.key_pressed(Key::Enter))
                && !self.path_input.trim().is_empty()
            {
                let source = platform::reopen(self.path_input.trim());
                self.path_input.clear();
                self.open(source);
            }
        });
        ui.horizontal(|ui| {
            if let Some((_, step, steps)) = self.state.progress {
                ui.add(
                    egui::ProgressBar::new(step as f32 / steps.max(1) as f32)
                        .text(format!("step {step}/{steps}"))
                        .desired_width(200.0),
                );
            } else if self.state.busy() {
                ui.spinner();
                ui.label("generating...");
            }
            if !self.state.loading.is_empty() {
                ui.spinner();
                let stages: Vec<String> = self
                    .state
                    .loading
                    .iter()
                    .map(|l| match self.state.load_stage.get(l) {
                        Some(stage) => format!("{l} ({stage})"),
                        None => l.clone(),
                    })
                    .collect();
                ui.label(format!("loading {}", stages.join(", ")));
            }
            if let Some(g) = self.state.current() {
                for r in &g.rows {
                    if let (Some(secs), Some(latency)) = (r.secs_per_clip, r.latency) {
                        ui.label(format!(
                            "{} @{}: {:.3} s/clip, on screen {:.2} s after the click",
                            r.model, r.steps, secs, latency
                        ));
                    }
                }
            }
            let backend = self
                .state
                .backend
                .as_ref()
                .map_or(self.backend.clone(), |b| format!("generating on {b}"));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.weak(backend)
            });
        });
        let mut close = false;
        if let Some(notice) = &self.state.notice {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(Color32::from_rgb(200, 140, 20), notice);
                close = ui
                    .small_button("ok")
                    .on_hover_text("hide this notice")
                    .clicked();
            });
        }
        if close {
            self.state.notice = None;
        }
        if let Some(e) = &self.state.error {
            ui.colored_label(Color32::from_rgb(230, 90, 80), e);
        }
        ui.add_space(2.0);
    }

    fn grid(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.clip_rect = None;
        self.drawn.clear();
        let Some(index) = self.state.shown else {
            ui.centered_and_justified(|ui| {
                ui.label(if self.state.models.is_empty() {
                    "loading the model…"
                } else {
                    "type a prompt and press Enter"
                })
            });
            return;
        };
        let g = self.state.history[index].clone();
        let frame = self.state.playback.frame;
        let size = self.state.settings.clip_size;
        egui::ScrollArea::both().show(ui, |ui| {
            ui.label(RichText::new(&g.prompt).strong());
            for (ri, row) in g.rows.iter().enumerate() {
                ui.label(format!(
                    "{} — {} step{}, guidance {}",
                    row.model,
                    row.steps,
                    if row.steps == 1 { "" } else { "s" },
                    row.guidance
                ));
                if let Some(e) = &row.error {
                    ui.colored_label(Color32::from_rgb(230, 90, 80), e);
                    continue;
                }
                ui.horizontal_wrapped(|ui| {
                    if row.clips.is_empty() {
                        for _ in &g.seeds {
                            let (rect, _) =
                                ui.allocate_exact_size(Vec2::splat(size), egui::Sense::hover());
                            ui.painter()
                                .rect_filled(rect, 4.0, ui.visuals().faint_bg_color);
                        }
                        return;
                    }
                    for (ci, video) in row.clips.iter().enumerate() {
                        let f = frame.min(video.frames - 1);
                        let tex = self.textures.get(&ctx, (g.id, ri, ci, f), video);
                        self.drawn.push((ri, ci, f));
                        ui.vertical(|ui| {
                            let selected = self.state.selected == (ri, ci);
                            let image = egui::Image::new(egui::load::SizedTexture::new(
                                tex.id(),
                                Vec2::splat(size),
                            ))
                            .sense(egui::Sense::click());
                            let r = ui.add(image);
                            if selected {
                                ui.painter().rect_stroke(
                                    r.rect.expand(2.0),
                                    3.0,
                                    egui::Stroke::new(2.0, ui.visuals().selection.stroke.color),
                                    egui::StrokeKind::Outside,
                                );
                            }
                            if r.clicked() {
                                self.state.selected = (ri, ci);
                            }
                            if ri == 0 && ci == 0 {
                                self.clip_rect = Some(r.rect);
                            }
                            ui.weak(format!("seed {}", g.seeds[ci]));
                        });
                    }
                });
            }
        });
    }

    /// The live explorer: a slider between two ends (prompt + seed each) or a pad over four
    /// seeds, and the clip where the control is, remade while it moves.
    fn explorer(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        ui.heading("Explore");
        let s = &mut self.state.settings;
        ui.horizontal(|ui| {
            ui.radio_value(&mut s.explore_mode, ExploreMode::Line, "two ends");
            ui.radio_value(&mut s.explore_mode, ExploreMode::Pad, "four seeds");
        });
        let mut at = self.state.explorer.at;
        match s.explore_mode {
            ExploreMode::Line => {
                ui.weak(format!("from: the prompt above, seed {}", s.seed));
                ui.horizontal(|ui| {
                    let l = ui.label("to: seed");
                    ui.add(egui::DragValue::new(&mut s.explore_seed_b).speed(1.0))
                        .labelled_by(l.id);
                });
                let r = ui.add(
                    egui::TextEdit::singleline(&mut s.explore_prompt_b)
                        .hint_text("and prompt (empty: the same)")
                        .desired_width(ui.available_width()),
                );
                self.widget_rects.insert("explore_prompt_b", r.rect);
                let l = ui.label("position");
                ui.spacing_mut().slider_width = (ui.available_width() - 8.0).max(80.0);
                let slider = ui
                    .add(
                        egui::Slider::new(&mut at[0], 0.0..=1.0)
                            .show_value(false)
                            .smart_aim(false),
                    )
                    .labelled_by(l.id);
                self.widget_rects.insert("explore_slider", slider.rect);
                let value = ui.add(
                    egui::DragValue::new(&mut at[0])
                        .range(0.0..=1.0)
                        .speed(0.01)
                        .max_decimals(3),
                );
                self.widget_rects.insert("explore_value", value.rect);
            }
            ExploreMode::Pad => {
                ui.weak(format!(
                    "seeds {}, {} (top) and {}, {} (bottom) of the prompt above",
                    s.seed,
                    s.seed.wrapping_add(1),
                    s.seed.wrapping_add(2),
                    s.seed.wrapping_add(3)
                ));
                let side = ui.available_width().clamp(120.0, 240.0);
                let (rect, r) =
                    ui.allocate_exact_size(Vec2::splat(side), egui::Sense::click_and_drag());
                self.widget_rects.insert("explore_pad", rect);
                if let Some(p) = r.interact_pointer_pos() {
                    let rel = (p - rect.min) / rect.size();
                    at = [rel.x, rel.y];
                }
                let painter = ui.painter_at(rect);
                painter.rect_filled(rect, 4.0, ui.visuals().faint_bg_color);
                painter.rect_stroke(
                    rect,
                    4.0,
                    ui.visuals().widgets.noninteractive.bg_stroke,
                    egui::StrokeKind::Inside,
                );
                let dot = rect.min
                    + Vec2::new(at[0].clamp(0.0, 1.0), at[1].clamp(0.0, 1.0)) * rect.size();
                painter.circle_filled(dot, 6.0, ui.visuals().selection.bg_fill);
                painter.circle_stroke(dot, 6.0, ui.visuals().selection.stroke);
            }
        }
        if at != self.state.explorer.at {
            self.state.explore_to(at);
        }
        ui.separator();
        let size = self.state.settings.clip_size;
        let frame = self.state.playback.frame;
        let e = &self.state.explorer;
        match &e.clip {
            Some((job, video)) => {
                let f = frame.min(video.frames - 1);
                // One texture per clip and frame; old clips' textures go with the map's reset.
                if self.textures.frames.len() > 4096 {
                    self.textures.frames.clear();
                }
                let tex = self.textures.get(&ctx, (u64::MAX - job.id, 0, 0, f), video);
                let r = ui.add(egui::Image::new(egui::load::SizedTexture::new(
                    tex.id(),
                    Vec2::splat(size),
                )));
                self.widget_rects.insert("explore_clip", r.rect);
                ui.weak(format!(
                    "at {:.3}{} · {} @{}",
                    job.point.at[0],
                    if job.point.corners.len() == 4 {
                        format!(", {:.3}", job.point.at[1])
                    } else {
                        String::new()
                    },
                    job.model,
                    job.steps
                ));
            }
            None => {
                let (rect, _) = ui.allocate_exact_size(Vec2::splat(size), egui::Sense::hover());
                ui.painter()
                    .rect_filled(rect, 4.0, ui.visuals().faint_bg_color);
            }
        }
        ui.horizontal(|ui| {
            if e.busy() {
                ui.spinner();
            }
            ui.label(match e.rate() {
                Some(r) => format!("{} clips · {r:.1} clips/s", e.made),
                None => format!("{} clips", e.made),
            });
        });
        if let Some(err) = &e.error {
            ui.colored_label(Color32::from_rgb(230, 90, 80), err);
        }
    }

    fn timeline(&mut self, ui: &mut egui::Ui) {
        ui.add_space(4.0);
        let frames = self.state.frames();
        ui.horizontal(|ui| {
            let playing = self.state.playback.playing;
            if ui
                .button(if playing { "Pause" } else { "Play" })
                .on_hover_text("play / pause (space)")
                .clicked()
            {
                self.state.playback.toggle();
            }
            if ui
                .button("<")
                .on_hover_text("previous frame (left arrow)")
                .clicked()
            {
                self.state.playback.step(-1, frames);
            }
            if ui
                .button(">")
                .on_hover_text("next frame (right arrow)")
                .clicked()
            {
                self.state.playback.step(1, frames);
            }
            let mut frame = self.state.playback.frame;
            let last = frames.saturating_sub(1);
            // The label apart from the slider, so the slider's rect is its rail (the browser
            // test clicks both ends).
            let frame_label = ui.label("frame");
            let slider = ui
                .add_enabled(
                    frames > 1,
                    egui::Slider::new(&mut frame, 0..=last).show_value(false),
                )
                .labelled_by(frame_label.id);
            self.widget_rects.insert("timeline", slider.rect);
            if slider.changed() {
                self.state.playback.scrub(frame, frames);
            }
            ui.label(format!(
                "{}/{}",
                if frames == 0 {
                    0
                } else {
                    self.state.playback.frame + 1
                },
                frames
            ));
            ui.separator();
            let s = &mut self.state.settings;
            let loop_label = ui.label("at the end");
            egui::ComboBox::from_id_salt("loop")
                .selected_text(s.loop_mode.label())
                .show_ui(ui, |ui| {
                    for m in LoopMode::ALL {
                        ui.selectable_value(&mut s.loop_mode, m, m.label());
                    }
                })
                .response
                .labelled_by(loop_label.id);
            ui.add(egui::Slider::new(&mut s.fps, 1.0..=30.0).text("fps"));
            ui.checkbox(&mut s.nearest, "nearest")
                .on_hover_text("nearest-neighbour magnification (off: linear)");
            ui.add(egui::Slider::new(&mut s.clip_size, 64.0..=512.0).text("size"));
            ui.separator();
            let fps = s.fps.round().max(1.0) as u32;
            let clip = self.state.selected_clip().cloned();
            if ui
                .add_enabled(clip.is_some(), egui::Button::new("Export GIF"))
                .clicked()
                && let Some(v) = &clip
            {
                self.report(platform::export_gif(v, fps));
            }
            if ui
                .add_enabled(clip.is_some(), egui::Button::new("Export PNG frames"))
                .clicked()
                && let Some(v) = &clip
            {
                self.report(platform::export_frames(v));
            }
        });
        ui.add_space(4.0);
    }

    fn report(&mut self, result: Result<Option<String>, String>) {
        match result {
            Ok(Some(msg)) => self.state.error = Some(msg),
            Ok(None) => {}
            Err(e) => self.state.error = Some(format!("export failed: {e}")),
        }
    }

    fn history(&mut self, ui: &mut egui::Ui) {
        ui.heading("History");
        let ctx = ui.ctx().clone();
        let mut restore = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for (i, g) in self.state.history.iter().enumerate().rev() {
                ui.horizontal(|ui| {
                    let thumb = g.rows.iter().find_map(|r| r.clips.first());
                    let r = match thumb {
                        Some(v) => {
                            let tex = self.textures.get(&ctx, (g.id, usize::MAX, 0, 0), v);
                            ui.add(
                                egui::Image::new(egui::load::SizedTexture::new(
                                    tex.id(),
                                    Vec2::splat(48.0),
                                ))
                                .sense(egui::Sense::click()),
                            )
                        }
                        None => ui.add_sized([48.0, 48.0], egui::Spinner::new()),
                    };
                    let main = g.rows.last().expect("a generation has a row");
                    let text = format!(
                        "{}\nseed {}{} · {} @{} w={}",
                        g.prompt,
                        g.seeds[0],
                        if g.seeds.len() > 1 {
                            format!("+{}", g.seeds.len() - 1)
                        } else {
                            String::new()
                        },
                        main.model,
                        main.steps,
                        main.guidance
                    );
                    let l = ui.selectable_label(self.state.shown == Some(i), text);
                    if r.clicked() || l.clicked() {
                        restore = Some(i);
                    }
                });
            }
        });
        if let Some(i) = restore {
            self.state.restore(i);
        }
    }

    /// What a scripted browser needs to drive and check the page like a user: where the
    /// widgets and the first clip are (points), the frame on screen, what is loaded, timings.
    pub fn status_json(&self) -> String {
        let rect = |r: &egui::Rect| serde_json::json!([r.min.x, r.min.y, r.max.x, r.max.y]);
        let rows: Vec<serde_json::Value> = self.state.current().map_or(Vec::new(), |g| {
            g.rows.iter().map(|r| serde_json::json!({"model": r.model, "steps": r.steps, "clips": r.clips.len(), "secs_per_clip": r.secs_per_clip, "latency": r.latency, "error": r.error})).collect()
        });
        serde_json::json!({
            "models": self.state.models.iter().map(|m| &m.label).collect::<Vec<_>>(),
            "loading": self.state.loading,
            "load_stage": self.state.load_stage,
            "backend": self.state.backend,
            "notice": self.state.notice,
            "error": self.state.error,
            "busy": self.state.busy(),
            "generations": self.state.history.len(),
            "prompt": self.state.settings.prompt,
            "frame": self.state.playback.frame,
            "frames": self.state.frames(),
            "playing": self.state.playback.playing,
            "rows": rows,
            "explore": {
                "open": self.state.settings.explore,
                "at": self.state.explorer.at,
                "clip_at": self.state.explorer.clip.as_ref().map(|(j, _)| j.point.at),
                "made": self.state.explorer.made,
                "busy": self.state.explorer.busy(),
                "rate": self.state.explorer.rate(),
                "error": self.state.explorer.error,
                "clip_hash": self.state.explorer.clip.as_ref().map(|(_, v)| format!("{:016x}", fnv1a(&v.rgba))),
            },
            "clip_rect": self.clip_rect.as_ref().map(rect),
            "widgets": self.widget_rects.iter().map(|(k, r)| (k.to_string(), rect(r))).collect::<serde_json::Map<String, serde_json::Value>>(),
        })
        .to_string()
    }

    /// The screenshot run: once the first clips have been drawn for a few frames, ask the
    /// integration for the window's pixels, save them and close.
    fn automate(&mut self, ctx: &egui::Context) {
        let Some(path) = self.automation.screenshot.clone() else {
            return;
        };
        if self.clip_rect.is_none() || self.state.busy() {
            if let Some(e) = &self.state.error {
                eprintln!("flick-viewer: {e}");
                std::process::exit(1);
            }
            return;
        }
        self.automation.frames_shown += 1;
        ctx.request_repaint();
        if self.automation.frames_shown < 5 || self.automation.requested {
            return;
        }
        self.automation.requested = true;
        let rect = self.clip_rect.expect("checked above");
        if let Some(g) = self.state.current() {
            for r in &g.rows {
                println!(
                    "timing {} @{} ({} clips): {:.3} s/clip, clips on screen {:.2} s after the click",
                    r.model,
                    r.steps,
                    r.clips.len(),
                    r.secs_per_clip.unwrap_or(f64::NAN),
                    r.latency.unwrap_or(f64::NAN)
                );
            }
        }
        let ppp = ctx.pixels_per_point();
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |image| {
            let [w, h] = image.size;
            let saved = image::RgbaImage::from_raw(w as u32, h as u32, image.as_raw().to_vec())
                .ok_or("bad screenshot size")
                .and_then(|im| im.save(&path).map_err(|_| "cannot write the screenshot"));
            match saved {
                Ok(()) => {
                    // Where the first clip is, in pixels, for the checker.
                    let r = rect * ppp;
                    println!(
                        "screenshot {} clip {} {} {} {}",
                        path.display(),
                        r.min.x.round(),
                        r.min.y.round(),
                        r.max.x.round(),
                        r.max.y.round()
                    );
                }
                Err(e) => eprintln!("flick-viewer: {e}: {}", path.display()),
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
        });
    }
}

/// FNV-1a of a clip's bytes: the browser test compares clips by it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    // In the browser the page keeps the settings itself (flick-web).
    #[cfg(not(target_arch = "wasm32"))]
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.state.settings);
    }
}
