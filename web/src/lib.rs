//! `flick-web`: the viewer in the browser.
//!
//! Wasm modules built from this crate (one cargo feature each, see `web/build.sh`), so that a page
//! downloads only what it runs:
//! - `page` ([`start`]) runs on the page: the egui app ([`flick_viewer::ViewerApp`], drawn with
//!   WebGL2) over a `WebEngine` that sends requests to
//! - an engine ([`worker_main`]) in a dedicated Web Worker: `webgpu` (flick-direct: Flick's WGSL
//!   kernels launched through wgpu, no burn), `cpu` (burn's flex backend), or `webgpu-burn`
//!   (burn's wgpu backend with Flick's kernels; `?engine=burn`). It opens the device, downloads
//!   the models with progress, warms each up, and generates. Every read from the GPU there is
//!   asynchronous, and the page never waits on the model: it stays responsive while a clip is
//!   made, even on the CPU.
//!
//! `web/index.html` picks the engine (WebGPU where the browser offers an adapter) and downloads it
//! beside the page's module. Where the WebGPU engine finds the adapter unfit, or dies on it, the
//! page replaces it with a CPU engine (fetched then) and says why.
//!
//! Messages are JSON strings (a model's bytes travel beside them as a `Uint8Array`). A panic in
//! the worker is reported to the page as [`Event::Fatal`] before the worker dies.

#![cfg(target_arch = "wasm32")]

#[cfg(feature = "page")]
mod page;
#[cfg(any(feature = "cpu", feature = "webgpu", feature = "webgpu-burn"))]
mod worker;

#[cfg(feature = "page")]
pub use page::{flick_status, start};
#[cfg(any(feature = "cpu", feature = "webgpu", feature = "webgpu-burn"))]
pub use worker::worker_main;

use flick_viewer::engine::Event;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Page → worker.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ToWorker {
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
pub(crate) enum FromWorker {
    Event(Event),
    /// A line for the browser console (load and generation timings).
    Log(String),
    /// The WebGPU engine cannot run here (why): the page moves to the CPU engine.
    Unusable(String),
}

pub(crate) fn console_error(s: &str) {
    web_sys::console::error_1(&JsValue::from_str(s));
}

pub(crate) fn js_error(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}
