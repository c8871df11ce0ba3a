//! Device selection, in one place: the CPU backend (`flex`, pure Rust) or a GPU through wgpu
//! (Vulkan, Metal, DX12, WebGPU). Never a silent fallback: asking for wgpu without an adapter is
//! an error, and the chosen backend and adapter are described for printing.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which backend runs the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (`flex`).
    Cpu,
    /// burn's wgpu backend on the default adapter.
    Wgpu,
}

impl std::str::FromStr for BackendKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(crate::Error::Device(format!(
                "unknown backend {other:?}: use `cpu` or `wgpu`"
            ))),
        }
    }
}

/// Open a device of the given kind. For wgpu the adapter is requested now, so a machine without
/// one fails here with a message rather than later inside a kernel.
pub fn open(kind: BackendKind) -> Result<Device, crate::Error> {
    match kind {
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(not(target_family = "wasm"))]
        BackendKind::Wgpu => {
            // burn registers the wgpu runtime once per process: a second `init` fails with
            // "Service already initialized", so the first result is kept and shared.
            static WGPU: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
            WGPU.get_or_init(|| {
                if let Some(dir) = autotune_cache_dir() {
                    flick_shaders::keep_autotune_cache(&dir);
                }
                let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| {
                    format!("no usable wgpu adapter ({e:?}); on a machine without a GPU install Mesa's lavapipe (`apt-get install mesa-vulkan-drivers`) or use `--backend cpu`")
                })?;
                // wgpu falls back to OpenGL when it finds no Vulkan driver; burn 0.22.1 /
                // cubecl 0.11.3 then hang in matmul autotuning (in wgpu's GL queue submit), so
                // an OpenGL adapter is refused here rather than met as a hang later.
                if setup.backend == burn::tensor::wgpu::wgpu::Backend::Gl {
                    return Err(format!(
                        "wgpu found only an OpenGL adapter ({}), which Flick cannot run on (it hangs in kernel autotuning); install a Vulkan driver (on a machine without a GPU, Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`, or `bash scripts/setup.sh test`) or use `--backend cpu`",
                        setup.adapter.get_info().name
                    ));
                }
                Ok(device)
            })
            .clone()
            .map_err(crate::Error::Device)
        }
        #[cfg(target_family = "wasm")]
        BackendKind::Wgpu => Err(crate::Error::Device(
            "in the browser, initialise wgpu asynchronously".into(),
        )),
    }
}

/// Where GPU runs keep cubecl's autotune cache: `$FLICK_AUTOTUNE_CACHE`, else
/// `$XDG_CACHE_HOME/flick/cubecl` or `~/.cache/flick/cubecl` (see
/// [`flick_shaders::keep_autotune_cache`]).
#[cfg(not(target_family = "wasm"))]
pub fn autotune_cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("FLICK_AUTOTUNE_CACHE") {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("flick").join("cubecl"))
}

/// A one-line description: backend and, for GPUs, the adapter's name.
pub fn describe(device: &Device) -> String {
    match device.identity() {
        Some(id) => format!("wgpu on {}", id.name),
        None => "cpu (burn flex, pure Rust)".to_string(),
    }
}
