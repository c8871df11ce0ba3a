//! `flick-web`: the viewer in the browser.
//!
//! Two halves of one wasm module, started by `web/index.html` and `web/worker.js`:
//! - [`start`] runs on the page: the egui app ([`flick_viewer::ViewerApp`], drawn with WebGL2)
//!   over a [`WebEngine`] that sends requests to
//! - [`worker_main`], in a dedicated Web Worker: it picks the device (WebGPU through burn's wgpu
//!   backend, initialised asynchronously; where WebGPU is missing or unfit, burn's CPU backend,
//!   said so), downloads the models with progress, warms each up, and generates. Every tensor read
//!   there is asynchronous, and the page never waits on the model: it stays responsive while a
//!   clip is made, even on the CPU fallback.
//!
//! Messages are JSON strings (a model's bytes travel beside them as a `Uint8Array`). A panic in
//! the worker is reported to the page as [`Event::Fatal`] before the worker dies.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use burn::prelude::Device;
use flick_core::generate::Generator;
use flick_viewer::ViewerApp;
use flick_viewer::engine::{Engine, Event, ModelSource, Request};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_time::Instant;

/// Page → worker.
#[derive(Serialize, Deserialize, Debug)]
enum ToWorker {
    /// First message: which device (`auto`, `webgpu`, `cpu`), whether Flick's WGSL kernels run
    /// on WebGPU (`?fused=0`: burn's composed operations, for comparison), the batch to warm up
    /// with, and why, when this worker replaces one that crashed on WebGPU.
    Init {
        backend: String,
        fused: bool,
        warm_batch: usize,
        reason: Option<String>,
    },
    /// Load a model from an address (downloaded by the worker) or from the bytes sent along.
    Load {
        label: String,
        url: Option<String>,
        name: String,
    },
    Generate {
        id: u64,
        model: String,
        prompts: Vec<String>,
        seeds: Vec<u64>,
        steps: usize,
        guidance: f32,
    },
    /// One clip at a point between latent corners (the explorer).
    Explore {
        id: u64,
        model: String,
        point: flick_core::generate::LatentPoint,
        steps: usize,
        guidance: f32,
    },
}

/// Worker → page.
#[derive(Serialize, Deserialize, Debug)]
enum FromWorker {
    Event(Event),
    /// A line for the browser console (load and generation timings).
    Log(String),
}

fn console_log(s: &str) {
    web_sys::console::log_1(&JsValue::from_str(s));
}

fn console_error(s: &str) {
    web_sys::console::error_1(&JsValue::from_str(s));
}

fn js_error(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

// ------------------------------------------------------------------------------------------
// The page

thread_local! {
    /// The app's last [`ViewerApp::status_json`], for [`flick_status`].
    static STATUS: RefCell<String> = const { RefCell::new(String::new()) };
    /// The running eframe app (kept alive for the page's lifetime).
    static RUNNER: RefCell<Option<eframe::WebRunner>> = const { RefCell::new(None) };
}

/// The engine on the page's side: requests go to the worker, its events come back through
/// `onmessage` into `inbox` (and wake egui). If the worker dies while on WebGPU (an adapter
/// whose compiler rejects one of burn's kernels panics inside wgpu, which a worker cannot
/// survive), a new worker on the CPU takes over: the models are loaded again and the jobs in
/// flight re-sent, and the page says why.
pub struct WebEngine {
    module: JsValue,
    backend: String,
    fused: bool,
    warm_batch: usize,
    worker: web_sys::Worker,
    /// Which worker is current; events of an earlier one are dropped.
    generation: u32,
    inbox: Rc<RefCell<Vec<(u32, Event)>>>,
    wake: Rc<RefCell<Option<egui::Context>>>,
    /// Every load so far (replayed on a new worker).
    loads: Vec<(ToWorker, Option<std::sync::Arc<Vec<u8>>>)>,
    /// Jobs sent and not finished: when (page clock) and what.
    pending: HashMap<u64, (Instant, ToWorker)>,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl WebEngine {
    /// Start a worker (`worker.js`, given the page's compiled wasm `module`) on `backend`
    /// (`auto`, `webgpu` or `cpu`), with Flick's kernels if `fused`; `wake` asks egui for a
    /// repaint.
    pub fn new(
        module: JsValue,
        backend: &str,
        fused: bool,
        warm_batch: usize,
        wake: Rc<RefCell<Option<egui::Context>>>,
    ) -> Result<Self, String> {
        let mut engine = Self {
            module,
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
        engine.attach(None)?;
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
                Ok(FromWorker::Event(event)) => inbox.borrow_mut().push((generation, event)),
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
                .push((generation, Event::Fatal { error }));
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
        js_sys::Reflect::set(&start, &"module".into(), &self.module).map_err(js_error)?;
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

    fn post(&self, message: &ToWorker, bytes: Option<&[u8]>) {
        let json = serde_json::to_string(message).expect("messages serialise");
        let parts = js_sys::Array::of1(&JsValue::from_str(&json));
        if let Some(b) = bytes {
            parts.push(&js_sys::Uint8Array::from(b));
        }
        if let Err(e) = self.worker.post_message(&parts) {
            self.inbox.borrow_mut().push((
                self.generation,
                Event::Fatal {
                    error: format!("cannot reach the generation worker: {}", js_error(e)),
                },
            ));
        }
    }

    /// The worker died on WebGPU: replace it with one on the CPU and redo what it was doing.
    fn fall_back(&mut self, error: &str) -> Result<(), String> {
        self.worker.terminate();
        self.generation += 1;
        self.backend = "cpu".into();
        self.worker = spawn_worker()?;
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
                            Event::LoadFailed {
                                label,
                                origin: p.display().to_string(),
                                error,
                            },
                        ));
                    }
                };
                self.post(&message, bytes.as_deref().map(|b| b.as_slice()));
                self.loads.push((message, bytes));
            }
            Request::Generate(job) => {
                let message = ToWorker::Generate {
                    id: job.id,
                    model: job.model,
                    prompts: job.prompts,
                    seeds: job.seeds,
                    steps: job.steps,
                    guidance: job.guidance,
                };
                self.post(&message, None);
                self.pending.insert(job.id, (Instant::now(), message));
            }
            Request::Explore(job) => {
                let message = ToWorker::Explore {
                    id: job.id,
                    model: job.model,
                    point: job.point,
                    steps: job.steps,
                    guidance: job.guidance,
                };
                self.post(&message, None);
                self.pending.insert(job.id, (Instant::now(), message));
            }
        }
    }

    fn poll(&mut self) -> Vec<Event> {
        let events = std::mem::take(&mut *self.inbox.borrow_mut());
        let mut out = Vec::new();
        for (generation, mut event) in events {
            if generation != self.generation {
                continue;
            }
            match &mut event {
                Event::Done { job, latency, .. } => {
                    if let Some((t, _)) = self.pending.remove(job) {
                        *latency = t.elapsed().as_secs_f64();
                    }
                }
                Event::Failed { job, .. } => {
                    self.pending.remove(job);
                }
                Event::Fatal { error } if self.backend != "cpu" => {
                    let error = error.clone();
                    if let Err(e) = self.fall_back(&error) {
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
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.app.state.settings);
    }
}

/// Start the viewer on the canvas `canvas_id`, generating in a worker (`worker.js`) that runs
/// the same compiled wasm `module`. `backend`: `auto` (WebGPU if usable, else CPU), `webgpu` or
/// `cpu`; `fused`: Flick's WGSL kernels on WebGPU (false: burn's composed operations).
#[wasm_bindgen]
pub async fn start(
    canvas_id: String,
    module: JsValue,
    backend: String,
    fused: bool,
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
                let settings: flick_viewer::state::Settings = cc
                    .storage
                    .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                    .unwrap_or_default();
                let engine = WebEngine::new(
                    module,
                    &backend,
                    fused,
                    settings.batch.clamp(1, flick_viewer::state::MAX_BATCH),
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

// ------------------------------------------------------------------------------------------
// The worker

fn post_from_worker(message: &FromWorker) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let json = serde_json::to_string(message).expect("messages serialise");
    if let Err(e) = scope.post_message(&JsValue::from_str(&json)) {
        console_error(&format!(
            "flick worker: cannot post to the page: {}",
            js_error(e)
        ));
    }
}

fn emit(event: Event) {
    post_from_worker(&FromWorker::Event(event));
}

fn log(line: String) {
    post_from_worker(&FromWorker::Log(line));
}

/// burn/cubecl's warnings and errors (a WGSL compilation failure, with the shader's source) go
/// to the page's console: a worker's own console is easy to miss.
struct WorkerLogger;

impl log::Log for WorkerLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // cubecl warns once per kernel family that the browser has no on-disk autotune cache.
        metadata.level() <= log::Level::Warn
            && !metadata
                .target()
                .starts_with("cubecl_environment::persistence")
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            log(format!(
                "flick worker {} [{}]: {}",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }
    fn flush(&self) {}
}

/// Entry point of `worker.js`: install the message handler; requests are done one at a time,
/// in order.
#[wasm_bindgen]
pub fn worker_main() {
    if log::set_logger(&WorkerLogger).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    std::panic::set_hook(Box::new(|info| {
        let error = format!("the generation worker crashed: {info}");
        console_error(&error);
        emit(Event::Fatal { error });
    }));
    let (tx, rx) = futures_channel::mpsc::unbounded::<(ToWorker, Option<Vec<u8>>)>();
    let onmessage =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            let parts: js_sys::Array = e.data().unchecked_into();
            let text = parts.get(0).as_string().unwrap_or_default();
            let bytes = parts
                .get(1)
                .dyn_into::<js_sys::Uint8Array>()
                .ok()
                .map(|a| a.to_vec());
            match serde_json::from_str::<ToWorker>(&text) {
                Ok(message) => {
                    let _ = tx.unbounded_send((message, bytes));
                }
                Err(err) => {
                    console_error(&format!("flick worker: unreadable request ({err}): {text}"))
                }
            }
        });
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    scope.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    wasm_bindgen_futures::spawn_local(serve(rx));
}

struct WorkerState {
    device: Device,
    warm_batch: usize,
    models: HashMap<String, Generator>,
}

async fn serve(mut rx: futures_channel::mpsc::UnboundedReceiver<(ToWorker, Option<Vec<u8>>)>) {
    let mut state: Option<WorkerState> = None;
    while let Some((message, bytes)) = rx.next().await {
        match (message, state.as_mut()) {
            (
                ToWorker::Init {
                    backend,
                    fused,
                    warm_batch,
                    reason,
                },
                None,
            ) => {
                flick_core::shaders::set_fused(fused);
                let (device, mut described, mut notice) = open_device(&backend).await;
                if !fused && device.identity().is_some() {
                    described.push_str(" (burn's operations: ?fused=0)");
                }
                if reason.is_some() {
                    notice = reason;
                }
                log(format!("flick: generating on {described}"));
                if let Some(n) = &notice {
                    log(format!("flick: {n}"));
                }
                emit(Event::Backend { described, notice });
                state = Some(WorkerState {
                    device,
                    warm_batch,
                    models: HashMap::new(),
                });
            }
            (ToWorker::Init { .. }, Some(_)) => {
                console_error("flick worker: initialised twice; ignored")
            }
            (_, None) => console_error("flick worker: a request before Init; ignored"),
            (ToWorker::Load { label, url, name }, Some(s)) => {
                load(s, label, url, name, bytes).await
            }
            (
                ToWorker::Explore {
                    id,
                    model,
                    point,
                    steps,
                    guidance,
                },
                Some(s),
            ) => {
                let Some(g) = loaded(s, &model, id) else {
                    continue;
                };
                let t0 = Instant::now();
                match g.explore_async(&point, steps, guidance).await {
                    Ok(clip) => {
                        let secs = t0.elapsed().as_secs_f64();
                        emit(Event::Done {
                            job: id,
                            clips: vec![clip],
                            secs_per_clip: secs,
                            latency: secs,
                        });
                    }
                    Err(e) => emit(Event::Failed {
                        job: id,
                        error: format!("exploring failed: {e}"),
                    }),
                }
            }
            (
                ToWorker::Generate {
                    id,
                    model,
                    prompts,
                    seeds,
                    steps,
                    guidance,
                },
                Some(s),
            ) => {
                let Some(g) = loaded(s, &model, id) else {
                    continue;
                };
                let t0 = Instant::now();
                let result = g
                    .generate_videos_async(&prompts, &seeds, steps, guidance, |step, steps| {
                        emit(Event::Progress {
                            job: id,
                            step,
                            steps,
                        })
                    })
                    .await;
                match result {
                    Ok(clips) => {
                        let secs = t0.elapsed().as_secs_f64();
                        let secs_per_clip = secs / clips.len().max(1) as f64;
                        log(format!(
                            "flick: {model} @{steps}: {} clips in {secs:.3} s ({secs_per_clip:.3} s/clip)",
                            clips.len()
                        ));
                        emit(Event::Done {
                            job: id,
                            clips,
                            secs_per_clip,
                            latency: secs,
                        });
                    }
                    Err(e) => emit(Event::Failed {
                        job: id,
                        error: format!("generation failed: {e}"),
                    }),
                }
            }
        }
    }
}

/// The loaded model `model` for job `id`, or `None` after reporting the job failed.
fn loaded<'a>(s: &'a WorkerState, model: &str, id: u64) -> Option<&'a Generator> {
    let g = s.models.get(model);
    if g.is_none() {
        emit(Event::Failed {
            job: id,
            error: format!("model {model:?} is not loaded"),
        });
    }
    g
}

const CPU_NAME: &str = "the CPU (burn flex in WebAssembly, one thread)";

/// The device: WebGPU when the browser has a usable adapter (checked with a small product read
/// back asynchronously), else the CPU, with a notice saying why.
async fn open_device(choice: &str) -> (Device, String, Option<String>) {
    if choice == "cpu" {
        return (Device::flex(), CPU_NAME.into(), Some("The CPU backend was asked for (?backend=cpu): generation runs in WebAssembly on one core.".into()));
    }
    let why = match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            // Browsers may hide the adapter's name.
            let adapter = if info.name.is_empty() {
                format!("an unnamed {:?} adapter", info.device_type)
            } else {
                format!("{} ({:?})", info.name, info.device_type)
            };
            let name = format!("WebGPU on {adapter}");
            log(format!(
                "flick: WebGPU adapter initialised: {adapter}; checking it"
            ));
            match check_adapter(&device, &setup.adapter).await {
                Ok(()) => {
                    let software =
                        matches!(info.device_type, burn::tensor::wgpu::wgpu::DeviceType::Cpu)
                            || info.name.to_ascii_lowercase().contains("swiftshader");
                    let notice = software.then(|| {
                        format!("WebGPU runs on {adapter}, a CPU rasteriser: expect it to be slow.")
                    });
                    return (device, name, notice);
                }
                Err(why) => format!("the WebGPU adapter ({adapter}) cannot run the model ({why})"),
            }
        }
        Err(e) => format!("this browser offers no usable WebGPU adapter ({e})"),
    };
    (
        Device::flex(),
        CPU_NAME.into(),
        Some(format!(
            "No WebGPU: {why}. Generating on the CPU in WebAssembly instead (slower)."
        )),
    )
}

/// What the model needs of an adapter, checked before trusting it: enough storage buffers per
/// shader stage and workgroup size for burn's kernels, and a matrix product that comes back
/// right.
async fn check_adapter(
    device: &Device,
    adapter: &burn::tensor::wgpu::wgpu::Adapter,
) -> Result<(), String> {
    use burn::prelude::*;
    let limits = adapter.limits();
    if limits.max_storage_buffers_per_shader_stage < 8 {
        return Err(format!(
            "{} storage buffers per shader stage, 8 needed",
            limits.max_storage_buffers_per_shader_stage
        ));
    }
    if limits.max_compute_invocations_per_workgroup < 256 {
        return Err(format!(
            "workgroups of {} invocations, 256 needed",
            limits.max_compute_invocations_per_workgroup
        ));
    }
    let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), device);
    let product = a
        .clone()
        .matmul(a)
        .into_data_async()
        .await
        .map_err(|e| format!("reading a result back failed: {e:?}"))?;
    let values = product.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    if values != [7.0, 10.0, 15.0, 22.0] {
        return Err(format!("a 2×2 product came back as {values:?}"));
    }
    // Row-vector products like the model's (timestep MLP, text pooling): their autotuning crashed
    // browsers (burn's autotune is now off in the wasm build, see the workspace Cargo.toml); an
    // adapter that fails them fails here, early, not after the model has downloaded.
    for rows in [1usize, 8] {
        let x = Tensor::<2>::ones([rows, 64], device);
        let w = Tensor::<2>::ones([64, 256], device);
        let sum: f32 = x
            .matmul(w)
            .sum()
            .into_scalar_async()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if (sum - (rows * 64 * 256) as f32).abs() > 1.0 {
            return Err(format!(
                "a {rows}×64 by 64×256 product of ones summed to {sum}"
            ));
        }
    }
    Ok(())
}

/// Download (with progress) or take the bytes, build the model, warm it up at the batch the
/// page will ask for (so the first click does not pay for shader compilation), report.
async fn load(
    s: &mut WorkerState,
    label: String,
    url: Option<String>,
    name: String,
    bytes: Option<Vec<u8>>,
) {
    let origin = url.clone().unwrap_or_else(|| format!("<{name}>"));
    let fail = |error: String| {
        emit(Event::LoadFailed {
            label: label.clone(),
            origin: origin.clone(),
            error,
        })
    };
    let t0 = Instant::now();
    let bytes = match (url, bytes) {
        (_, Some(b)) => b,
        (Some(u), None) => match download(&label, &u).await {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
        (None, None) => return fail("no address and no bytes".into()),
    };
    let downloaded = t0.elapsed().as_secs_f64();
    emit(Event::LoadProgress {
        label: label.clone(),
        stage: "initialising".into(),
        fraction: None,
    });
    let t1 = Instant::now();
    let g = match Generator::from_bytes(&bytes, &s.device) {
        Ok(g) => g,
        Err(e) => return fail(format!("not a usable Flick checkpoint ({e})")),
    };
    let init = t1.elapsed().as_secs_f64();
    let d = g.defaults();
    emit(Event::LoadProgress {
        label: label.clone(),
        stage: "warming up".into(),
        fraction: None,
    });
    let t2 = Instant::now();
    let batch = s.warm_batch.max(1);
    // On WebGPU the first generation compiles the kernels; the CPU has nothing to compile, so
    // there the warm-up would only delay the first clip.
    if s.device.identity().is_some() {
        let prompts = vec!["warm-up".to_string(); batch];
        let seeds: Vec<u64> = (0..batch as u64).collect();
        if let Err(e) = g
            .generate_videos_async(&prompts, &seeds, 1, d.guidance, |_, _| {})
            .await
        {
            return fail(format!("the warm-up generation failed: {e}"));
        }
    }
    let warm = t2.elapsed().as_secs_f64();
    log(format!(
        "flick: loaded {label} ({:.1} MB): download {downloaded:.2} s, init {init:.2} s, warm-up (batch {batch}, one step) {warm:.2} s",
        bytes.len() as f64 / 1e6
    ));
    let c = &g.info.config;
    emit(Event::Loaded {
        label: label.clone(),
        kind: g.info.kind.clone(),
        default_steps: d.steps,
        default_guidance: d.guidance,
        shape: [c.frames, c.height, c.width],
        origin: origin.clone(),
    });
    s.models.insert(label, g);
}

/// The largest checkpoint the page downloads (the same bound as a file picked from disk): a
/// larger one is refused from its announced length before any of it is read, and a download
/// that passes the bound without announcing it is stopped there.
const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// Fetch `url`, reporting the fraction received when the server gives the length.
async fn download(label: &str, url: &str) -> Result<Vec<u8>, String> {
    use wasm_bindgen_futures::JsFuture;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: web_sys::Response = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot download {url}: {}", js_error(e)))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!(
            "cannot download {url}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let total: Option<f64> = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    let too_large = |n: f64| {
        format!(
            "{url}: {:.0} MiB{} is more than the {} MiB a checkpoint may have",
            n / f64::from(1 << 20),
            if total.is_some() { "" } else { " so far" },
            MAX_DOWNLOAD_BYTES >> 20
        )
    };
    if let Some(t) = total.filter(|&t| t > MAX_DOWNLOAD_BYTES as f64) {
        return Err(too_large(t));
    }
    let body = response
        .body()
        .ok_or_else(|| format!("{url}: empty response"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut out = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    let mut reported = -1.0f32;
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("downloading {url} failed: {}", js_error(e)))?;
        if js_sys::Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let value: js_sys::Uint8Array = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(js_error)?
            .unchecked_into();
        let start = out.len();
        if (start + value.length() as usize) as u64 > MAX_DOWNLOAD_BYTES {
            let _ = reader.cancel();
            return Err(too_large((start + value.length() as usize) as f64));
        }
        out.resize(start + value.length() as usize, 0);
        value.copy_to(&mut out[start..]);
        let fraction = total.map(|t| (out.len() as f64 / t) as f32);
        if fraction.is_none_or(|f| f - reported >= 0.05) {
            reported = fraction.unwrap_or(0.0);
            emit(Event::LoadProgress {
                label: label.to_string(),
                stage: format!("downloading {:.1} MB", out.len() as f64 / 1e6),
                fraction,
            });
        }
    }
    Ok(out)
}
