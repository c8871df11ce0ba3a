//! Device selection, in one place: the CPU backend (`flex`, pure Rust) or a GPU through wgpu
//! (Vulkan, Metal, DX12, WebGPU). Never a silent fallback: asking for wgpu without an adapter is
//! an error, and the chosen backend and adapter are described for printing.

use burn::prelude::*;
#[cfg(not(target_family = "wasm"))]
use burn::tensor::DeviceKind;
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
        #[cfg(feature = "flex")]
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(not(feature = "flex"))]
        BackendKind::Cpu => Err(crate::Error::Device(
            "this build has no CPU backend (built without the `flex` feature)".into(),
        )),
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
    #[cfg(feature = "wgpu")]
    if let Some(id) = device.identity() {
        return format!("wgpu on {}", id.name);
    }
    let _ = device;
    "cpu (burn flex, pure Rust)".to_string()
}

/// Which wgpu adapters a training run uses (`--devices`): indices into
/// [`wgpu_adapters`]' list, or all of them. An index given twice opens a second logical device on
/// the same adapter (its own burn runtime, memory and command stream, the same GPU), which is how
/// one GPU measures what a second replica costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceList {
    All,
    Indices(Vec<usize>),
}

impl std::str::FromStr for DeviceList {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        let indices: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse()).collect();
        match indices {
            Ok(v) if !v.is_empty() && v.len() <= 64 => Ok(Self::Indices(v)),
            _ => Err(crate::Error::Device(format!(
                "--devices {s:?}: give adapter indices separated by commas (e.g. 0,1) or `all`"
            ))),
        }
    }
}

/// The wgpu device kinds burn can select, searched to name an enumerated adapter's kind.
#[cfg(not(target_family = "wasm"))]
fn kind_of(device: &Device) -> Option<DeviceKind> {
    let indexed = |f: fn(usize) -> DeviceKind| (0..16).map(f);
    indexed(DeviceKind::DiscreteGpu)
        .chain(indexed(DeviceKind::IntegratedGpu))
        .chain(indexed(DeviceKind::VirtualGpu))
        .chain([DeviceKind::Cpu])
        .find(|k| Device::wgpu(k.clone()) == *device)
}

/// The wgpu adapters of this machine, in the order `--devices` indexes them (burn's enumeration on
/// the graphics API wgpu settles on): the lazily opened device and its kind.
#[cfg(not(target_family = "wasm"))]
fn wgpu_adapter_kinds() -> Vec<DeviceKind> {
    Device::enumerate(burn::tensor::DeviceType::Wgpu)
        .into_vec()
        .iter()
        .filter_map(kind_of)
        .collect()
}

/// Names of this machine's wgpu adapters, as `--devices` numbers them (opens each adapter: for
/// listings and error messages).
#[cfg(not(target_family = "wasm"))]
pub fn wgpu_adapters() -> Vec<String> {
    wgpu_adapter_kinds()
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let name = open_adapter(&k)
                .map(|(_, name)| name)
                .unwrap_or_else(|e| format!("({e})"));
            format!("{i} = {name} ({k:?})")
        })
        .collect()
}

/// Opened adapters of this process, by kind: the device burn registered and the handles that
/// opened it (a repeated index registers the same handles again as another runtime).
#[cfg(not(target_family = "wasm"))]
type Opened = (Device, burn::tensor::wgpu::WgpuSetup, String);

#[cfg(not(target_family = "wasm"))]
type OpenedList = std::sync::Mutex<Vec<(DeviceKind, Result<Opened, String>)>>;

#[cfg(not(target_family = "wasm"))]
fn opened() -> &'static OpenedList {
    static OPENED: std::sync::OnceLock<OpenedList> = std::sync::OnceLock::new();
    OPENED.get_or_init(Default::default)
}

#[cfg(not(target_family = "wasm"))]
fn open_adapter(kind: &DeviceKind) -> Result<(Device, String), String> {
    let mut all = opened().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = all.iter().find(|(k, _)| k == kind) {
        return r.clone().map(|(d, _, n)| (d, n));
    }
    if let Some(dir) = autotune_cache_dir() {
        flick_shaders::keep_autotune_cache(&dir);
    }
    let r = Device::wgpu_options()
        .device_kind(kind.clone())
        .init_with_setup()
        .map_err(|e| format!("{e:?}"))
        .and_then(|(device, setup)| {
            let name = setup.adapter.get_info().name;
            if setup.backend == burn::tensor::wgpu::wgpu::Backend::Gl {
                return Err(format!(
                    "{name} is an OpenGL adapter, which Flick cannot run on (it hangs in kernel autotuning)"
                ));
            }
            Ok((device, setup, name))
        });
    all.push((kind.clone(), r.clone()));
    r.map(|(d, _, n)| (d, n))
}

/// Open the wgpu devices of `list` for a data-parallel run: one device per entry, the first being
/// the main device (where the optimizer steps). An index given again is a second logical device
/// on that adapter: the same wgpu device and queue registered as another burn runtime. Errors
/// name the adapters this machine has.
#[cfg(not(target_family = "wasm"))]
pub fn open_devices(list: &DeviceList) -> Result<Vec<(Device, String)>, crate::Error> {
    let kinds = wgpu_adapter_kinds();
    let listing = || {
        if kinds.is_empty() {
            "this machine has no wgpu adapter (on a machine without a GPU install Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`)".to_string()
        } else {
            format!(
                "this machine's wgpu adapters: {}",
                wgpu_adapters().join("; ")
            )
        }
    };
    let indices = match list {
        DeviceList::All => (0..kinds.len()).collect(),
        DeviceList::Indices(v) => v.clone(),
    };
    if indices.is_empty() || indices.iter().any(|&i| i >= kinds.len()) {
        let bad: Vec<String> = indices
            .iter()
            .filter(|&&i| i >= kinds.len())
            .map(|i| i.to_string())
            .collect();
        return Err(crate::Error::Device(format!(
            "--devices: no adapter {}; {}",
            if bad.is_empty() {
                "at all".to_string()
            } else {
                bad.join(", ")
            },
            listing()
        )));
    }
    let mut out = Vec::new();
    for (n, &i) in indices.iter().enumerate() {
        let (device, name) = open_adapter(&kinds[i])
            .map_err(|e| crate::Error::Device(format!("--devices: adapter {i}: {e}")))?;
        if indices[..n].contains(&i) {
            // Another logical device on the same adapter: the same handles, another runtime.
            let setup = {
                let all = opened().lock().unwrap_or_else(|e| e.into_inner());
                let (_, r) = all
                    .iter()
                    .find(|(k, _)| *k == kinds[i])
                    .expect("opened just above");
                r.as_ref().expect("opened just above").1.clone()
            };
            let extra = Device::wgpu_options().setup(setup).init().map_err(|e| {
                crate::Error::Device(format!(
                    "--devices: a second device on adapter {i} ({name}): {e:?}"
                ))
            })?;
            out.push((extra, format!("{name} (replica {})", n + 1)));
        } else {
            out.push((device, name));
        }
    }
    Ok(out)
}
