//! Where models load and clips are made, away from the UI: the app sends [`Request`]s and polls
//! [`Event`]s. [`ThreadEngine`] runs the work on its own thread (native); [`InlineEngine`] does
//! it inside `send` (tests, and anywhere a thread is not available). Both share [`Worker`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::Device;
use flick_core::checkpoint::CheckpointInfo;
use flick_core::generate::{Generator, LatentPoint};
use flick_core::video::Video;
use web_time::Instant;

/// A checkpoint to load: a file, bytes already in memory (opened in the browser), or an
/// address the browser's worker downloads (with progress).
#[derive(Clone, Debug)]
pub enum ModelSource {
    Path(PathBuf),
    Bytes { name: String, bytes: Arc<Vec<u8>> },
    Url(String),
}

impl ModelSource {
    /// A short name: the file stem.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Path(p) => p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
            ModelSource::Bytes { name, .. } => name.trim_end_matches(".safetensors").to_string(),
            ModelSource::Url(url) => {
                let file = url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or(url)
                    .rsplit('/')
                    .next()
                    .unwrap_or(url);
                file.trim_end_matches(".safetensors").to_string()
            }
        }
    }
    /// Where it came from, for messages and the list of opened files (`<name>` for bytes).
    pub fn origin(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Bytes { name, .. } => format!("<{name}>"),
            ModelSource::Url(url) => url.clone(),
        }
    }
}

/// One batch of clips to make.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: u64,
    /// Label of a loaded model.
    pub model: String,
    pub prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub guidance: f32,
}

/// One clip at a point of the latent space between corners (the explorer).
#[derive(Clone, Debug, PartialEq)]
pub struct ExploreJob {
    pub id: u64,
    pub model: String,
    pub point: LatentPoint,
    pub steps: usize,
    pub guidance: f32,
}

#[derive(Clone, Debug)]
pub enum Request {
    Load { label: String, source: ModelSource },
    Generate(Job),
    Explore(ExploreJob),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// What generates (the browser learns it only once its worker has a device), and a notice
    /// for the user when it is not what they would expect (no WebGPU: the CPU fallback).
    Backend {
        described: String,
        notice: Option<String>,
    },
    /// A stage of loading a model (download, init, warm-up), with a fraction where known.
    LoadProgress {
        label: String,
        stage: String,
        fraction: Option<f32>,
    },
    Loaded {
        label: String,
        kind: String,
        default_steps: usize,
        default_guidance: f32,
        shape: [usize; 3],
        origin: String,
    },
    LoadFailed {
        label: String,
        origin: String,
        error: String,
    },
    /// After each sampler step of a job.
    Progress {
        job: u64,
        step: usize,
        steps: usize,
    },
    /// `latency`: seconds from the request to the clips (queueing included).
    Done {
        job: u64,
        clips: Vec<Video>,
        secs_per_clip: f64,
        latency: f64,
    },
    Failed {
        job: u64,
        error: String,
    },
    /// The engine cannot go on (the browser worker crashed): every pending job has failed.
    Fatal {
        error: String,
    },
}

impl Event {
    /// [`Event::Loaded`] for a model (its checkpoint's `info`) loaded as `label` from `origin`.
    pub fn loaded(label: String, origin: String, info: &CheckpointInfo) -> Self {
        let d = info.sampling_defaults();
        let c = &info.config;
        Event::Loaded {
            label,
            kind: info.kind.clone(),
            default_steps: d.steps,
            default_guidance: d.guidance,
            shape: [c.frames, c.height, c.width],
            origin,
        }
    }
}

pub trait Engine {
    fn send(&mut self, request: Request);
    /// Everything reported since the last poll.
    fn poll(&mut self) -> Vec<Event>;
}

/// The loaded models on one device, and the work itself.
pub struct Worker {
    pub device: Device,
    models: HashMap<String, Generator>,
}

impl Worker {
    pub fn new(device: Device) -> Self {
        Self {
            device,
            models: HashMap::new(),
        }
    }

    /// Do one request, reporting through `emit`. `sent` is when the request was made.
    pub fn handle(&mut self, request: Request, sent: Instant, emit: &mut dyn FnMut(Event)) {
        match request {
            Request::Load { label, source } => {
                let origin = source.origin();
                let loaded = match &source {
                    ModelSource::Path(p) => Generator::load(p, &self.device),
                    ModelSource::Bytes { bytes, .. } => Generator::from_bytes(bytes, &self.device),
                    ModelSource::Url(url) => Err(flick_core::Error::Io(format!(
                        "{url}: addresses are opened in the browser; here open a file"
                    ))),
                };
                match loaded {
                    Ok(g) => {
                        emit(Event::loaded(label.clone(), origin, &g.info));
                        self.models.insert(label, g);
                    }
                    Err(e) => emit(Event::LoadFailed {
                        label,
                        origin,
                        error: format!("not a usable Flick checkpoint ({e})"),
                    }),
                }
            }
            Request::Explore(job) => {
                let Some(g) = self.models.get(&job.model) else {
                    return emit(Event::Failed {
                        job: job.id,
                        error: format!("model {:?} is not loaded", job.model),
                    });
                };
                let t0 = Instant::now();
                match g.explore(&job.point, job.steps, job.guidance) {
                    Ok(clip) => emit(Event::Done {
                        job: job.id,
                        clips: vec![clip],
                        secs_per_clip: t0.elapsed().as_secs_f64(),
                        latency: sent.elapsed().as_secs_f64(),
                    }),
                    Err(e) => emit(Event::Failed {
                        job: job.id,
                        error: format!("exploring failed: {e}"),
                    }),
                }
            }
            Request::Generate(job) => {
                let Some(g) = self.models.get(&job.model) else {
                    return emit(Event::Failed {
                        job: job.id,
                        error: format!("model {:?} is not loaded", job.model),
                    });
                };
                let t0 = Instant::now();
                let id = job.id;
                let result = g.generate_videos(
                    &job.prompts,
                    &job.seeds,
                    job.steps,
                    job.guidance,
                    |step, steps| {
                        emit(Event::Progress {
                            job: id,
                            step: step + 1,
                            steps,
                        })
                    },
                );
                match result {
                    Ok(videos) => {
                        let secs_per_clip = t0.elapsed().as_secs_f64() / videos.len().max(1) as f64;
                        emit(Event::Done {
                            job: id,
                            clips: videos,
                            secs_per_clip,
                            latency: sent.elapsed().as_secs_f64(),
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

/// Does each request inside `send`.
pub struct InlineEngine {
    pub worker: Worker,
    events: Vec<Event>,
}

impl InlineEngine {
    pub fn new(device: Device) -> Self {
        Self {
            worker: Worker::new(device),
            events: Vec::new(),
        }
    }
}

impl Engine for InlineEngine {
    fn send(&mut self, request: Request) {
        let events = &mut self.events;
        self.worker
            .handle(request, Instant::now(), &mut |e| events.push(e));
    }
    fn poll(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// A worker thread that owns the models; requests are done in order.
#[cfg(not(target_arch = "wasm32"))]
pub struct ThreadEngine {
    tx: std::sync::mpsc::Sender<(Request, Instant)>,
    rx: std::sync::mpsc::Receiver<Event>,
}

#[cfg(not(target_arch = "wasm32"))]
impl ThreadEngine {
    /// `wake` is called after every event (the app asks egui to repaint).
    pub fn spawn(device: Device, wake: impl Fn() + Send + 'static) -> Self {
        let (tx, requests) = std::sync::mpsc::channel::<(Request, Instant)>();
        let (events, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("flick-engine".into())
            .spawn(move || {
                let mut worker = Worker::new(device);
                for (request, sent) in requests {
                    worker.handle(request, sent, &mut |e| {
                        let _ = events.send(e);
                        wake();
                    });
                }
            })
            .expect("spawning the engine thread");
        Self { tx, rx }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Engine for ThreadEngine {
    fn send(&mut self, request: Request) {
        // The thread only ends with the engine, so a send cannot fail while we hold `tx`.
        let _ = self.tx.send((request, Instant::now()));
    }
    fn poll(&mut self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }
}
