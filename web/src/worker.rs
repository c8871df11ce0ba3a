//! The generation worker: one engine (WebGPU or the CPU) serving the page's requests in order.

use std::collections::HashMap;

use flick_viewer::engine::Event;
use futures_util::StreamExt;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_time::Instant;

use crate::{FromWorker, ToWorker, console_error, js_error};

#[cfg(any(
    all(feature = "webgpu", feature = "webgpu-burn"),
    all(feature = "cpu", feature = "webgpu"),
))]
compile_error!(
    "one engine per wasm module: build flick-web with one of the features cpu, webgpu, webgpu-burn"
);

/// The WebGPU engine of flick-direct: Flick's kernels launched through wgpu, no burn.
#[cfg(feature = "webgpu")]
mod engine {
    pub type Device = std::rc::Rc<flick_direct::Gpu>;
    pub type Generator = flick_direct::Generator;

    pub fn model(bytes: &[u8], device: &Device) -> Result<Generator, String> {
        Generator::from_bytes(bytes, device)
    }

    pub fn on_gpu(_: &Device) -> bool {
        true
    }

    /// Compile the kernels a one-step generation runs, running none (they do not depend on the
    /// batch).
    pub async fn warm_up(g: &Generator, _batch: usize, guidance: f32) -> Result<String, String> {
        g.warm_up(1, guidance).await?;
        Ok("kernels compiled, nothing run".into())
    }
}

/// burn's engines: flex on the CPU, or its wgpu backend.
#[cfg(not(feature = "webgpu"))]
mod engine {
    pub use burn::prelude::Device;
    pub use flick_core::generate::Generator;

    pub fn model(bytes: &[u8], device: &Device) -> Result<Generator, String> {
        Generator::from_bytes(bytes, device).map_err(|e| e.to_string())
    }

    pub fn on_gpu(device: &Device) -> bool {
        flick_core::shaders::on_gpu(device)
    }

    /// On WebGPU a first generation at the page's batch compiles burn's kernels (cubecl writes
    /// them per shape); the CPU has nothing to compile, so there a warm-up would only delay the
    /// first clip.
    pub async fn warm_up(g: &Generator, batch: usize, guidance: f32) -> Result<String, String> {
        if !on_gpu(&g.device) {
            return Ok("none on the CPU".into());
        }
        let prompts = vec!["warm-up".to_string(); batch];
        let seeds: Vec<u64> = (0..batch as u64).collect();
        g.generate_videos_async(&prompts, &seeds, 1, guidance, |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("batch {batch}, one step"))
    }
}

use engine::{Device, Generator};

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
    // Said that WebGPU cannot run here: the page replaces this worker; until then requests
    // (already on their way) are dropped.
    let mut unusable = false;
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
                #[cfg(not(feature = "webgpu"))]
                flick_core::shaders::set_fused(fused);
                let (device, mut described, mut notice) = match open_device(&backend).await {
                    Ok(opened) => opened,
                    Err(why) => {
                        // The page replaces this worker with the CPU engine.
                        log(format!("flick: WebGPU cannot run here: {why}"));
                        post_from_worker(&FromWorker::Unusable(why));
                        unusable = true;
                        continue;
                    }
                };
                if !fused && cfg!(feature = "webgpu-burn") && engine::on_gpu(&device) {
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
            (_, None) if unusable => {}
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

#[cfg(feature = "cpu")]
const CPU_NAME: &str = "the CPU (burn flex in WebAssembly, one thread)";

/// The CPU engine's device. The notice says why the CPU runs (the page's reason, given with Init,
/// replaces it where the page chose the CPU engine for lack of WebGPU).
#[cfg(all(feature = "cpu", not(feature = "webgpu-burn")))]
async fn open_device(choice: &str) -> Result<(Device, String, Option<String>), String> {
    let notice = (choice == "cpu").then(|| "The CPU backend was asked for (?backend=cpu): generation runs in WebAssembly on one core.".to_string());
    Ok((Device::flex(), CPU_NAME.into(), notice))
}

/// How the page names a WebGPU adapter (browsers may hide its name), and the notice for one that
/// is a CPU rasteriser (`cpu`: the adapter says it is a CPU; SwiftShader is one whatever it says).
#[cfg(any(feature = "webgpu", feature = "webgpu-burn"))]
fn describe_adapter(name: &str, kind: impl std::fmt::Debug, cpu: bool) -> (String, Option<String>) {
    let adapter = if name.is_empty() {
        format!("an unnamed {kind:?} adapter")
    } else {
        format!("{name} ({kind:?})")
    };
    let software = cpu || name.to_ascii_lowercase().contains("swiftshader");
    let notice = software
        .then(|| format!("WebGPU runs on {adapter}, a CPU rasteriser: expect it to be slow."));
    (adapter, notice)
}

/// The WebGPU engine's device, when the browser has a usable adapter (checked with small products
/// read back asynchronously); otherwise why not (the page then moves to the CPU engine).
#[cfg(feature = "webgpu")]
async fn open_device(_choice: &str) -> Result<(Device, String, Option<String>), String> {
    use flick_direct::wgpu;
    let gpu = flick_direct::Gpu::open(wgpu::Backends::BROWSER_WEBGPU)
        .await
        .map_err(|e| format!("this browser offers no usable WebGPU adapter ({e})"))?;
    let info = gpu.info.clone();
    let (adapter, notice) = describe_adapter(
        &info.name,
        info.device_type,
        matches!(info.device_type, wgpu::DeviceType::Cpu),
    );
    log(format!(
        "flick: WebGPU adapter initialised: {adapter}; checking it"
    ));
    gpu.check()
        .await
        .map_err(|why| format!("the WebGPU adapter ({adapter}) cannot run the model ({why})"))?;
    Ok((
        std::rc::Rc::new(gpu),
        format!("WebGPU on {adapter}"),
        notice,
    ))
}

/// burn's WebGPU engine's device, when the browser has a usable adapter (checked with small
/// products read back asynchronously); otherwise why not (with the CPU engine built in too, that
/// instead).
#[cfg(feature = "webgpu-burn")]
async fn open_device(choice: &str) -> Result<(Device, String, Option<String>), String> {
    #[cfg(feature = "cpu")]
    if choice == "cpu" {
        return Ok((Device::flex(), CPU_NAME.into(), Some("The CPU backend was asked for (?backend=cpu): generation runs in WebAssembly on one core.".into())));
    }
    let _ = choice;
    let why = match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let (adapter, notice) = describe_adapter(
                &info.name,
                info.device_type,
                matches!(info.device_type, burn::tensor::wgpu::wgpu::DeviceType::Cpu),
            );
            let name = format!("WebGPU on {adapter} through burn");
            log(format!(
                "flick: WebGPU adapter initialised: {adapter}; checking it"
            ));
            match check_adapter(&device, &setup.adapter).await {
                Ok(()) => return Ok((device, name, notice)),
                Err(why) => format!("the WebGPU adapter ({adapter}) cannot run the model ({why})"),
            }
        }
        Err(e) => format!("this browser offers no usable WebGPU adapter ({e})"),
    };
    #[cfg(feature = "cpu")]
    return Ok((
        Device::flex(),
        CPU_NAME.into(),
        Some(format!(
            "No WebGPU: {why}. Generating on the CPU in WebAssembly instead (slower)."
        )),
    ));
    #[cfg(not(feature = "cpu"))]
    Err(why)
}

/// What the model needs of an adapter, checked before trusting it: enough storage buffers per
/// shader stage and workgroup size for burn's kernels, and a matrix product that comes back
/// right.
#[cfg(feature = "webgpu-burn")]
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

/// Download (with progress) or take the bytes, build the model, warm it up (so the first click
/// does not pay for shader compilation; `engine::warm_up`), report.
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
    let g = match engine::model(&bytes, &s.device) {
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
    let warmed = match engine::warm_up(&g, s.warm_batch.max(1), d.guidance).await {
        Ok(what) => what,
        Err(e) => return fail(format!("the warm-up failed: {e}")),
    };
    let warm = t2.elapsed().as_secs_f64();
    log(format!(
        "flick: loaded {label} ({:.1} MB): download {downloaded:.2} s, init {init:.2} s, warm-up ({warmed}) {warm:.2} s",
        bytes.len() as f64 / 1e6
    ));
    emit(Event::loaded(label.clone(), origin.clone(), &g.info));
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
