//! The page: the egui app over a [`WebEngine`] that talks to the generation worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use flick_viewer::ViewerApp;
use flick_viewer::engine::{Engine, Event, ModelSource, Request};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_time::Instant;

use crate::{FromWorker, ToWorker, console_error, js_error};

fn console_log(s: &str) {
    web_sys::console::log_1(&JsValue::from_str(s));
}

thread_local! {
    /// The app's last [`ViewerApp::status_json`], for [`flick_status`].
    static STATUS: RefCell<String> = const { RefCell::new(String::new()) };
    /// The running eframe app (kept alive for the page's lifetime).
    static RUNNER: RefCell<Option<eframe::WebRunner>> = const { RefCell::new(None) };
}

/// What the page hears from its worker.
enum Inbound {
    Event(Event),
    /// The WebGPU engine cannot run on this browser's adapter (why).
    Unusable(String),
}

/// The engine on the page's side: requests go to the worker, its events come back through
/// `onmessage` into `inbox` (and wake egui). If the WebGPU engine finds the adapter unfit, or
/// dies on it (an adapter whose compiler rejects one of burn's kernels panics inside wgpu, which a
/// worker cannot survive), a CPU engine takes over: the models are loaded again and the jobs in
/// flight re-sent, and the page says why.
pub struct WebEngine {
    /// The engine's compiled module (`None`: the worker fetches it itself).
    module: Option<JsValue>,
    /// `webgpu` or `cpu`.
    engine: String,
    backend: String,
    fused: bool,
    warm_batch: usize,
    worker: web_sys::Worker,
    /// Which worker is current; events of an earlier one are dropped.
    generation: u32,
    inbox: Rc<RefCell<Vec<(u32, Inbound)>>>,
    wake: Rc<RefCell<Option<egui::Context>>>,
    /// Every load so far (replayed on a new worker).
    loads: Vec<(ToWorker, Option<std::sync::Arc<Vec<u8>>>)>,
    /// Jobs sent and not finished: when (page clock) and what.
    pending: HashMap<u64, (Instant, ToWorker)>,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl WebEngine {
    /// Start a worker (`worker.js`) running `engine` (`webgpu` or `cpu`, its compiled wasm
    /// `module`) for the page's `backend` choice (`auto`, `webgpu` or `cpu`), with Flick's kernels
    /// if `fused`; `reason`: why the page chose the CPU engine, shown as the notice; `wake` asks
    /// egui for a repaint.
    pub fn new(
        module: JsValue,
        engine: &str,
        backend: &str,
        fused: bool,
        warm_batch: usize,
        reason: Option<String>,
        wake: Rc<RefCell<Option<egui::Context>>>,
    ) -> Result<Self, String> {
        let mut engine = Self {
            module: Some(module),
            engine: engine.to_string(),
            backend: backend.to_string(),
            fused,
            warm_batch,
            worker: spawn_worker()?,
            generation: 0,
            inbox: Rc::default(),
            wake,
            loads: Vec::new(),
            pending: HashMap::new(),
            _handlers: Vec::new(),
        };
        engine.attach(reason)?;
        Ok(engine)
    }

    /// Wire the current worker's messages and errors to the inbox and send it the module and
    /// Init.
    fn attach(&mut self, reason: Option<String>) -> Result<(), String> {
        let generation = self.generation;
        let (inbox, wake) = (self.inbox.clone(), self.wake.clone());
        let onmessage = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let e: web_sys::MessageEvent = e.unchecked_into();
            let Some(text) = e.data().as_string() else {
                return;
            };
            match serde_json::from_str::<FromWorker>(&text) {
                Ok(FromWorker::Event(event)) => {
                    inbox.borrow_mut().push((generation, Inbound::Event(event)))
                }
                Ok(FromWorker::Unusable(why)) => inbox
                    .borrow_mut()
                    .push((generation, Inbound::Unusable(why))),
                Ok(FromWorker::Log(line)) => console_log(&line),
                Err(err) => console_error(&format!(
                    "flick: unreadable message from the worker ({err}): {text}"
                )),
            }
            if let Some(ctx) = wake.borrow().as_ref() {
                ctx.request_repaint();
            }
        });
        let (inbox, wake) = (self.inbox.clone(), self.wake.clone());
        let onerror = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let e: web_sys::ErrorEvent = e.unchecked_into();
            let error = format!(
                "the generation worker failed: {} ({}:{})",
                e.message(),
                e.filename(),
                e.lineno()
            );
            inbox
                .borrow_mut()
                .push((generation, Inbound::Event(Event::Fatal { error })));
            if let Some(ctx) = wake.borrow().as_ref() {
                ctx.request_repaint();
            }
        });
        self.worker
            .set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        self.worker
            .set_onerror(Some(onerror.as_ref().unchecked_ref()));
        self._handlers.push(onmessage);
        self._handlers.push(onerror);
        let start = js_sys::Object::new();
        js_sys::Reflect::set(&start, &"engine".into(), &self.engine.as_str().into())
            .map_err(js_error)?;
        if let Some(module) = &self.module {
            js_sys::Reflect::set(&start, &"module".into(), module).map_err(js_error)?;
        }
        self.worker.post_message(&start).map_err(js_error)?;
        self.post(
            &ToWorker::Init {
                backend: self.backend.clone(),
                fused: self.fused,
                warm_batch: self.warm_batch,
                reason,
            },
            None,
        );
        Ok(())
    }

    /// Send a generation job and keep it until it is done (re-sent to a replacement worker).
    fn send_job(&mut self, id: u64, message: ToWorker) {
        self.post(&message, None);
        self.pending.insert(id, (Instant::now(), message));
    }

    fn post(&self, message: &ToWorker, bytes: Option<&[u8]>) {
        let json = serde_json::to_string(message).expect("messages serialise");
        let parts = js_sys::Array::of1(&JsValue::from_str(&json));
        if let Some(b) = bytes {
            parts.push(&js_sys::Uint8Array::from(b));
        }
        if let Err(e) = self.worker.post_message(&parts) {
            self.inbox.borrow_mut().push((
                self.generation,
                Inbound::Event(Event::Fatal {
                    error: format!("cannot reach the generation worker: {}", js_error(e)),
                }),
            ));
        }
    }

    /// The WebGPU worker died: replace it with a CPU one, saying why.
    fn crashed(&mut self, error: &str) -> Result<(), String> {
        // The panic's message: "...: wgpu error: <what wgpu refused>"; keep what was refused.
        let what = error
            .split("wgpu error: ")
            .nth(1)
            .unwrap_or(error)
            .lines()
            .next()
            .unwrap_or_default();
        let what: String = if what.chars().count() > 160 {
            what.chars().take(160).chain("…".chars()).collect()
        } else {
            what.to_string()
        };
        let reason = format!(
            "WebGPU failed on this adapter ({what}). Generating on the CPU in WebAssembly instead (slower)."
        );
        console_error(&format!("flick: the WebGPU worker crashed: {error}"));
        self.fall_back(reason)
    }

    /// Replace the WebGPU worker with one running the CPU engine (which fetches its module
    /// itself) and redo what the first was doing; `reason` becomes the page's notice.
    fn fall_back(&mut self, reason: String) -> Result<(), String> {
        self.worker.terminate();
        self.generation += 1;
        self.engine = "cpu".into();
        self.module = None;
        self.worker = spawn_worker()?;
        self.attach(Some(reason))?;
        for (load, bytes) in &self.loads {
            self.post(load, bytes.as_deref().map(|b| b.as_slice()));
        }
        let mut jobs: Vec<&(Instant, ToWorker)> = self.pending.values().collect();
        jobs.sort_by_key(|(t, _)| *t);
        for (_, job) in jobs {
            self.post(job, None);
        }
        Ok(())
    }
}

/// A module worker running `worker.js` (next to the page).
fn spawn_worker() -> Result<web_sys::Worker, String> {
    let options = web_sys::WorkerOptions::new();
    options.set_type(web_sys::WorkerType::Module);
    web_sys::Worker::new_with_options("./worker.js", &options)
        .map_err(|e| format!("cannot start the generation worker: {}", js_error(e)))
}

impl Engine for WebEngine {
    fn send(&mut self, request: Request) {
        match request {
            Request::Load { label, source } => {
                let (message, bytes) = match &source {
                    ModelSource::Url(url) => (
                        ToWorker::Load {
                            label,
                            url: Some(url.clone()),
                            name: source.name(),
                        },
                        None,
                    ),
                    ModelSource::Bytes { name, bytes } => (
                        ToWorker::Load {
                            label,
                            url: None,
                            name: name.clone(),
                        },
                        Some(bytes.clone()),
                    ),
                    ModelSource::Path(p) => {
                        let error =
                            "the browser has no file paths: use Open... or an address".into();
                        return self.inbox.borrow_mut().push((
                            self.generation,
                            Inbound::Event(Event::LoadFailed {
                                label,
                                origin: p.display().to_string(),
                                error,
                            }),
                        ));
                    }
                };
                self.post(&message, bytes.as_deref().map(|b| b.as_slice()));
                self.loads.push((message, bytes));
            }
            Request::Generate(job) => self.send_job(
                job.id,
                ToWorker::Generate {
                    id: job.id,
                    model: job.model,
                    prompts: job.prompts,
                    seeds: job.seeds,
                    steps: job.steps,
                    guidance: job.guidance,
                },
            ),
            Request::Explore(job) => self.send_job(
                job.id,
                ToWorker::Explore {
                    id: job.id,
                    model: job.model,
                    point: job.point,
                    steps: job.steps,
                    guidance: job.guidance,
                },
            ),
        }
    }

    fn poll(&mut self) -> Vec<Event> {
        let events = std::mem::take(&mut *self.inbox.borrow_mut());
        let mut out = Vec::new();
        for (generation, inbound) in events {
            if generation != self.generation {
                continue;
            }
            let mut event = match inbound {
                Inbound::Event(event) => event,
                Inbound::Unusable(why) => {
                    let reason = format!(
                        "No WebGPU: {why}. Generating on the CPU in WebAssembly instead (slower)."
                    );
                    if let Err(e) = self.fall_back(reason) {
                        out.push(Event::Fatal {
                            error: format!("{why}; starting a CPU worker failed: {e}"),
                        });
                    }
                    continue;
                }
            };
            match &mut event {
                Event::Done { job, latency, .. } => {
                    if let Some((t, _)) = self.pending.remove(job) {
                        *latency = t.elapsed().as_secs_f64();
                    }
                }
                Event::Failed { job, .. } => {
                    self.pending.remove(job);
                }
                Event::Fatal { error } if self.engine != "cpu" => {
                    let error = error.clone();
                    if let Err(e) = self.crashed(&error) {
                        out.push(Event::Fatal {
                            error: format!("{error}; starting a CPU worker failed too: {e}"),
                        });
                    }
                    continue;
                }
                Event::Fatal { error } => console_error(error),
                _ => {}
            }
            out.push(event);
        }
        out
    }
}

/// The app on the page, publishing its status for [`flick_status`] every frame. The page
/// opens on the one-step generator alone and shows its first clips (the saved prompt and seeds)
/// as soon as it is ready; the teacher is loaded after that, so it never delays the first clip.
struct WebApp {
    app: ViewerApp,
    /// Loaded once the first clips are on screen (or the first generation failed).
    deferred: Vec<ModelSource>,
    /// The first generation: not started (`None`), or its id.
    first: Option<u64>,
    /// The settings as last saved (JSON).
    saved: String,
}

impl eframe::App for WebApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.show(ui);
        let state = &self.app.state;
        if self.first.is_none() && !state.models.is_empty() && state.loading.is_empty() {
            self.first = Some(self.app.generate().unwrap_or(0));
        }
        let first_done = self.first.is_some_and(|id| {
            id == 0
                || self
                    .app
                    .state
                    .history
                    .iter()
                    .all(|g| g.id != id || g.done())
        });
        if first_done && !self.deferred.is_empty() {
            for source in std::mem::take(&mut self.deferred) {
                self.app.open_source(source);
            }
        }
        if first_done && !self.app.state.loading.is_empty() {
            // A load that started with the page: ask for frames until it is in.
            ui.ctx().request_repaint_after_secs(0.1);
        }
        let status = self.app.status_json();
        STATUS.with(|s| *s.borrow_mut() = status);
        // Settings saved as they change (a few hundred bytes of JSON, compared each frame).
        if let Ok(json) = serde_json::to_string(&self.app.state.settings)
            && json != self.saved
        {
            if let Some(storage) = local_storage() {
                let _ = storage.set_item(SETTINGS_KEY, &json);
            }
            self.saved = json;
        }
    }
}

/// Where the page keeps the viewer's settings: the browser's local storage, as JSON (eframe's own
/// persistence would bring a RON parser into the page's wasm: 0.45 MB).
const SETTINGS_KEY: &str = "flick.settings";

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The settings saved by an earlier visit (defaults where there are none or they do not parse).
fn load_settings() -> flick_viewer::state::Settings {
    local_storage()
        .and_then(|s| s.get_item(SETTINGS_KEY).ok().flatten())
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

/// Start the viewer on the canvas `canvas_id`, generating in a worker (`worker.js`) that runs
/// the compiled engine `module`, `engine` = `webgpu` or `cpu`. `backend`: what the page was
/// asked for, `auto` (WebGPU if usable, else CPU), `webgpu` or `cpu`; `fused`: Flick's WGSL
/// kernels on WebGPU (false: burn's composed operations); `reason`: why the page chose the CPU
/// engine where it did not have to (the notice it shows).
#[wasm_bindgen]
pub async fn start(
    canvas_id: String,
    module: JsValue,
    engine: String,
    backend: String,
    fused: bool,
    reason: Option<String>,
) -> Result<(), JsValue> {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("flick (page) panicked: {info}"))
    }));
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = document
        .get_element_by_id(&canvas_id)
        .ok_or_else(|| format!("no element #{canvas_id}"))?
        .dyn_into()
        .map_err(|_| format!("#{canvas_id} is not a canvas"))?;
    let wake: Rc<RefCell<Option<egui::Context>>> = Rc::default();
    let runner = eframe::WebRunner::new();
    let wake2 = wake.clone();
    runner
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| {
                *wake2.borrow_mut() = Some(cc.egui_ctx.clone());
                let settings = load_settings();
                let saved = serde_json::to_string(&settings).unwrap_or_default();
                let engine = WebEngine::new(
                    module,
                    &engine,
                    &backend,
                    fused,
                    settings.batch.clamp(1, flick_viewer::state::MAX_BATCH),
                    reason,
                    wake2.clone(),
                )?;
                let mut models: Vec<ModelSource> = flick_viewer::WEB_BUNDLED
                    .iter()
                    .map(|u| ModelSource::Url(u.to_string()))
                    .collect();
                // The one-step generator first and alone (see `WebApp`).
                let deferred = models.split_off(1);
                let app = ViewerApp::new(
                    settings,
                    Box::new(engine),
                    "starting the generation worker...".into(),
                    models,
                );
                Ok(Box::new(WebApp {
                    app,
                    deferred,
                    first: None,
                    saved,
                }))
            }),
        )
        .await?;
    RUNNER.with(|r| *r.borrow_mut() = Some(runner));
    Ok(())
}

/// The app's state as JSON (widget and clip positions in CSS pixels, frame, models, timings):
/// what the browser test reads to drive the page like a user and check it.
#[wasm_bindgen]
pub fn flick_status() -> String {
    STATUS.with(|s| s.borrow().clone())
}
