//! Checkpoints: one `.safetensors` file with every weight under its module path
//! (`blocks.0.attn.q.weight`, f32, little-endian) and the model config in the header's
//! metadata, so Python's `safetensors` opens it and Flick rebuilds the model from it alone.
//!
//! Writes go to a temp file that is renamed into place: a crash never leaves half a checkpoint.
//! Loading validates the format tag, the config, every tensor name and shape, and reports a
//! truncated or foreign file as an error that says what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::Error;
use crate::model::{Backbone, ModelConfig};
use crate::params::{map_params, visit_params};

/// Value of the `format` metadata key of every Flick checkpoint.
pub const FORMAT: &str = "flick/1";

/// What a checkpoint holds, from its metadata.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    /// `teacher` (multi-step flow model) or `generator` (one-step student).
    pub kind: String,
    pub config: ModelConfig,
    /// Everything else in the metadata (training step, command, …).
    pub extra: BTreeMap<String, String>,
}

/// Named tensors as plain data: `name → (shape, values)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Read every float parameter of `module` to host memory, by path, under `prefix`.
pub fn module_tensors<M: Module>(module: &M, prefix: &str, out: &mut NamedTensors) {
    visit_params(module, |path, _, value, shape| {
        let data: Vec<f32> = value
            .into_data()
            .try_to_vec::<f32>()
            .expect("float parameter");
        out.insert(format!("{prefix}{path}"), (shape.to_vec(), data));
    });
}

/// Load the tensors under `prefix` into `module` (built with the right config). Every parameter
/// must be present with the right shape; the error lists what is missing or mismatched.
pub fn load_module<M: Module>(
    module: M,
    tensors: &NamedTensors,
    prefix: &str,
    device: &Device,
) -> Result<M, Error> {
    load_params(module, tensors, prefix, device, false, &[]).map(|(m, _)| m)
}

/// Like [`load_module`], for warm starts: parameters found under `prefix` with the same shape
/// are copied, parameters the file lacks — and those whose path starts with one of `reset` —
/// keep their initialisation and are returned by path; a parameter present with another shape
/// is an error.
pub fn load_module_partial<M: Module>(
    module: M,
    tensors: &NamedTensors,
    prefix: &str,
    device: &Device,
    reset: &[String],
) -> Result<(M, Vec<String>), Error> {
    load_params(module, tensors, prefix, device, true, reset)
}

fn load_params<M: Module>(
    module: M,
    tensors: &NamedTensors,
    prefix: &str,
    device: &Device,
    allow_missing: bool,
    reset: &[String],
) -> Result<(M, Vec<String>), Error> {
    let mut problems = Vec::new();
    // Shapes first, from the parameters' lazy shapes: a file that does not fit the model is
    // refused before the model's memory is allocated (a config with absurd sizes costs nothing).
    for (path, shape) in crate::params::param_shapes(&module) {
        let name = format!("{prefix}{path}");
        if reset.iter().any(|r| path.starts_with(r.as_str())) {
            continue;
        }
        match tensors.get(&name) {
            Some((s, _)) if *s == shape => {}
            Some((s, _)) => problems.push(format!(
                "{name}: shape {s:?} in file, model expects {shape:?}"
            )),
            None if allow_missing => {}
            None => problems.push(format!("{name}: missing")),
        }
        if problems.len() > 64 {
            break;
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(8);
        return Err(Error::Checkpoint(format!(
            "{}{n} parameter(s) do not match: {}",
            if n > 64 { "over " } else { "" },
            problems.join("; ")
        )));
    }
    let mut fresh = Vec::new();
    let module = map_params(module, |path, _, _, shape| {
        let name = format!("{prefix}{path}");
        if reset.iter().any(|r| path.starts_with(r.as_str())) {
            fresh.push(path.to_string());
            return None;
        }
        match tensors.get(&name) {
            Some((s, data)) if s.as_slice() == shape => Some(Tensor::<1>::from_data(
                TensorData::new(data.clone(), [data.len()]),
                device,
            )),
            Some((s, _)) => {
                problems.push(format!(
                    "{name}: shape {s:?} in file, model expects {shape:?}"
                ));
                None
            }
            None if allow_missing => {
                fresh.push(path.to_string());
                None
            }
            None => {
                problems.push(format!("{name}: missing"));
                None
            }
        }
    });
    if problems.is_empty() {
        Ok((module, fresh))
    } else {
        let n = problems.len();
        problems.truncate(8);
        Err(Error::Checkpoint(format!(
            "{n} parameter(s) do not match: {}",
            problems.join("; ")
        )))
    }
}

/// Write named tensors plus metadata atomically (temp file, then rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &NamedTensors,
    metadata: BTreeMap<String, String>,
) -> Result<(), Error> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let bytes: &[u8] = bytemuck_f32(data);
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches data"),
            )
        })
        .collect();
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| Error::Checkpoint(format!("{}: cannot serialise: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` through a temp file and a rename (a failure never leaves half a
/// checkpoint), creating the folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // On disk before it replaces the old file: a power cut leaves one or the other.
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io(format!(
            "cannot write {}: {e}{}",
            path.display(),
            if path.exists() {
                " (the previous file there is unchanged)"
            } else {
                ""
            }
        ))
    })
}

/// Copy a checkpoint with every tensor stored as f16 (round to nearest even), metadata kept and
/// `stored_dtype = f16` added: half the bytes to download, widened back to f32 on load. Returns
/// the largest absolute change of any weight. Fails on a weight that f16 cannot hold (|w| > 65504).
pub fn convert_to_f16(input: &Path, output: &Path) -> Result<f32, Error> {
    let (tensors, mut metadata) = read_safetensors(input)?;
    let mut halves: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut max_change = 0.0f32;
    for (name, (shape, data)) in &tensors {
        let mut bytes = Vec::with_capacity(data.len() * 2);
        for &w in data {
            let h = half::f16::from_f32(w);
            if w.is_finite() && !h.is_finite() {
                return Err(Error::Checkpoint(format!(
                    "{}: weight {w} of {name} does not fit in f16",
                    input.display()
                )));
            }
            max_change = max_change.max((h.to_f32() - w).abs());
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        halves.insert(name.clone(), (shape.clone(), bytes));
    }
    metadata.insert("stored_dtype".into(), "f16".into());
    let typed = halves
        .into_iter()
        .map(|(name, (shape, bytes))| (name, (Dtype::F16, shape, bytes)))
        .collect();
    write_typed(output, &typed, metadata)?;
    Ok(max_change)
}

/// Write raw tensors of any dtype (`name → (dtype, shape, little-endian bytes)`) and metadata.
fn write_typed(
    output: &Path,
    tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    metadata: BTreeMap<String, String>,
) -> Result<(), Error> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).expect("shape matches data"),
            )
        })
        .collect();
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| Error::Checkpoint(format!("{}: cannot serialise: {e}", output.display())))?;
    write_atomic(output, &bytes)
}

/// Elements per block of the 8-bit format: each block of a tensor (in memory order) has its own
/// f16 scale (as llama.cpp's Q8_0): finer than one scale per output channel, and independent of
/// whether a layer stores its weight as `[in, out]` (burn's linear) or `[out, in, …]` (conv).
pub const Q8_BLOCK: usize = 32;
/// Tensors smaller than this (biases, norms, embeddings of a few rows) stay f16 in the 8-bit
/// format: they are a small part of the file and some (adaLN gates) are sensitive.
pub const Q8_MIN_ELEMENTS: usize = 1024;

/// Whether the 8-bit format stores this tensor as 8-bit: the attention and MLP weights (of the
/// transformer blocks and the text encoder, 62% of the small models' parameters); the timestep
/// modulation (adaLN), the patch embedding, the final projection and the conv stem and head stay
/// f16. On the bundled one-step generator (8 clips, `core/tests/q8.rs`, 2026-12-02): every large
/// tensor 8-bit moved channel values by up to 21/255 (mean 0.18/255); this choice by up to 17/255
/// (mean 0.10/255, 0.17% of values by more than 4/255) — the f16 copy by at most 1/255. So the
/// web page downloads the f16 copies; the 8-bit copy is for where size matters more.
pub fn q8_eligible(name: &str) -> bool {
    name.split('.')
        .any(|part| matches!(part, "mlp" | "attn" | "cross"))
}

/// Copy a checkpoint with its large attention and MLP weights ([`q8_eligible`]) stored as 8-bit
/// integers, one f16 scale per block of [`Q8_BLOCK`] elements (`NAME.q8` as I8 and `NAME.q8_scale` as F16: `w ≈ q · scale`, `scale =
/// max|w| / 127` of the block), the rest as f16; metadata kept and `stored_dtype = q8` added.
/// A little over a quarter of the f32 bytes; dequantised to f32 on load. Returns the largest
/// absolute change of any weight.
pub fn convert_to_q8(input: &Path, output: &Path) -> Result<f32, Error> {
    let (tensors, mut metadata) = read_safetensors(input)?;
    let mut out: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut max_change = 0.0f32;
    for (name, (shape, data)) in &tensors {
        if let Some(w) = data.iter().find(|w| !w.is_finite()) {
            return Err(Error::Checkpoint(format!(
                "{}: {name} holds {w}; an 8-bit copy needs finite weights",
                input.display()
            )));
        }
        if data.len() < Q8_MIN_ELEMENTS || !q8_eligible(name) {
            let mut bytes = Vec::with_capacity(data.len() * 2);
            for &w in data {
                let h = half::f16::from_f32(w);
                if !h.is_finite() {
                    return Err(Error::Checkpoint(format!(
                        "{}: weight {w} of {name} does not fit in f16",
                        input.display()
                    )));
                }
                max_change = max_change.max((h.to_f32() - w).abs());
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            out.insert(name.clone(), (Dtype::F16, shape.clone(), bytes));
            continue;
        }
        let mut q = Vec::with_capacity(data.len());
        let mut scales = Vec::with_capacity(data.len().div_ceil(Q8_BLOCK) * 2);
        for block in data.chunks(Q8_BLOCK) {
            let max = block.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = half::f16::from_f32(max / 127.0);
            if !scale.is_finite() {
                return Err(Error::Checkpoint(format!(
                    "{}: a block of {name} (max {max}) does not fit the 8-bit format's f16 scale",
                    input.display()
                )));
            }
            let sf = scale.to_f32();
            for &w in block {
                let v = if sf > 0.0 {
                    (w / sf).round().clamp(-127.0, 127.0)
                } else {
                    0.0
                };
                max_change = max_change.max((v * sf - w).abs());
                q.push(v as i8 as u8);
            }
            scales.extend_from_slice(&scale.to_le_bytes());
        }
        out.insert(format!("{name}.q8"), (Dtype::I8, shape.clone(), q));
        let blocks = data.len().div_ceil(Q8_BLOCK);
        out.insert(
            format!("{name}.q8_scale"),
            (Dtype::F16, vec![blocks], scales),
        );
    }
    metadata.insert("stored_dtype".into(), "q8".into());
    write_typed(output, &out, metadata)?;
    Ok(max_change)
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // f32 has no padding and any byte pattern is a valid u8; the platform is little-endian
    // (checked at compile time below), which is what safetensors specifies.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}
#[cfg(not(target_endian = "little"))]
compile_error!("safetensors files are little-endian; Flick supports little-endian targets only");

/// Read a safetensors file: all f32 tensors and the metadata. Errors name the file and what is
/// wrong with it (missing, truncated, not safetensors, unexpected dtype).
pub fn read_safetensors(path: &Path) -> Result<(NamedTensors, BTreeMap<String, String>), Error> {
    let bytes = read_checkpoint_file(path)?;
    read_safetensors_bytes(&bytes)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// The largest file read as a checkpoint or state (Flick's largest config is a few hundred MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// A checkpoint file's bytes, after a look at its first 8 bytes: a file that cannot be
/// safetensors (too short, a header length beyond the file, or over
/// [`MAX_CHECKPOINT_BYTES`]) is refused before it is read into memory.
fn read_checkpoint_file(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let fail = |why: String| Error::Checkpoint(format!("{}: {why}", path.display()));
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::Checkpoint(format!("cannot read {}: {e}", path.display())))?;
    let size = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .len();
    if size < 8 {
        return Err(fail(format!(
            "not a safetensors file or truncated ({size} bytes)"
        )));
    }
    if size > MAX_CHECKPOINT_BYTES {
        return Err(fail(format!(
            "{size} bytes is too large for a Flick checkpoint (at most {} GiB)",
            MAX_CHECKPOINT_BYTES >> 30
        )));
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let header = u64::from_le_bytes(prefix);
    if header > size - 8 {
        return Err(fail(format!(
            "not a safetensors file or truncated (header of {header} bytes in a file of {size})"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    bytes.extend_from_slice(&prefix);
    file.read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    Ok(bytes)
}

/// [`read_safetensors`] from memory (the browser has no files).
pub fn read_safetensors_bytes(
    bytes: &[u8],
) -> Result<(NamedTensors, BTreeMap<String, String>), String> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a safetensors file or truncated ({e})"))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file or truncated ({e})"))?;
    let mut out = NamedTensors::new();
    // 8-bit tensors (`flick convert --q8`): the integers now, dequantised with their scales below.
    let mut q8: BTreeMap<String, (Vec<usize>, Vec<i8>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() == Dtype::I8 {
            let Some(base) = name.strip_suffix(".q8") else {
                return Err(format!(
                    "tensor {name} is 8-bit but not named NAME.q8 (Flick's 8-bit format)"
                ));
            };
            let values = view.data().iter().map(|b| *b as i8).collect();
            q8.insert(base.to_string(), (view.shape().to_vec(), values));
            continue;
        }
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            // Half-size copies (`flick convert --f16`, the web page's download) widen on load.
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(format!(
                    "tensor {name} has dtype {other:?}; Flick checkpoints are f32 (or f16 and 8-bit copies)"
                ));
            }
        };
        out.insert(name, (view.shape().to_vec(), data));
    }
    for (base, (shape, values)) in q8 {
        let Some((_, scales)) = out.remove(&format!("{base}.q8_scale")) else {
            return Err(format!("8-bit tensor {base}.q8 has no {base}.q8_scale"));
        };
        if scales.len() != values.len().div_ceil(Q8_BLOCK) {
            return Err(format!(
                "8-bit tensor {base}: {} scales for {} values (one per {Q8_BLOCK} expected)",
                scales.len(),
                values.len()
            ));
        }
        if out.contains_key(&base) {
            return Err(format!(
                "tensor {base} is stored twice (as is and as 8-bit)"
            ));
        }
        let data = values
            .iter()
            .enumerate()
            .map(|(i, q)| *q as f32 * scales[i / Q8_BLOCK])
            .collect();
        out.insert(base, (shape, data));
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((out, metadata))
}

/// Parse and check the metadata of a model checkpoint.
pub fn info_from_metadata(meta: &BTreeMap<String, String>) -> Result<CheckpointInfo, String> {
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(format!(
                "checkpoint format {f:?} is not supported (expected {FORMAT:?})"
            ));
        }
        None => return Err("not a Flick checkpoint (no \"format\" metadata)".into()),
    }
    let kind = meta
        .get("kind")
        .cloned()
        .ok_or("checkpoint metadata lacks \"kind\"")?;
    let config_json = meta
        .get("config")
        .ok_or("checkpoint metadata lacks the model \"config\"")?;
    let config = serde_json::from_str(config_json)
        .map_err(|e| e.to_string())
        .and_then(ModelConfig::from_value)
        .map_err(|e| format!("checkpoint model config unreadable: {e}"))?;
    config.validate().map_err(|e| e.to_string())?;
    let extra = meta
        .iter()
        .filter(|(k, _)| !["format", "kind", "config"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(CheckpointInfo {
        kind,
        config,
        extra,
    })
}

/// Metadata of a model checkpoint.
pub fn model_metadata(
    kind: &str,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut meta = extra.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("kind".into(), kind.into());
    meta.insert(
        "config".into(),
        serde_json::to_string(config).expect("config serialises"),
    );
    meta
}

/// Save a model checkpoint.
pub fn save_model(
    path: &Path,
    model: &Backbone,
    kind: &str,
    config: &ModelConfig,
    extra: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let mut tensors = NamedTensors::new();
    module_tensors(model, "", &mut tensors);
    write_safetensors(path, &tensors, model_metadata(kind, config, extra))
}

/// Load a model checkpoint onto `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<(Backbone, CheckpointInfo), Error> {
    let bytes = read_checkpoint_file(path)?;
    load_model_bytes(&bytes, device)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// Load a model checkpoint from memory.
pub fn load_model_bytes(
    bytes: &[u8],
    device: &Device,
) -> Result<(Backbone, CheckpointInfo), String> {
    let (tensors, meta) = read_safetensors_bytes(bytes)?;
    let info = info_from_metadata(&meta)?;
    let model =
        load_module(info.config.init(device), &tensors, "", device).map_err(|e| e.to_string())?;
    Ok((model, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextEncoderConfig;

    fn tiny() -> ModelConfig {
        ModelConfig::new(
            TextEncoderConfig::new()
                .with_dim(16)
                .with_depth(1)
                .with_heads(2)
                .with_max_len(16),
        )
        .with_frames(2)
        .with_height(8)
        .with_width(8)
        .with_dim(16)
        .with_depth(1)
        .with_heads(2)
        .with_stem_channels(4)
    }

    #[test]
    fn round_trip_restores_every_weight_and_the_config() {
        let device = Device::flex();
        let cfg = tiny();
        let model = cfg.init(&device);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let extra = BTreeMap::from([("step".to_string(), "12".to_string())]);
        save_model(&p, &model, "teacher", &cfg, &extra).unwrap();
        assert!(!dir.path().join("m.safetensors.tmp").exists());
        let (back, info) = load_model(&p, &device).unwrap();
        assert_eq!(info.kind, "teacher");
        assert_eq!(info.config, cfg);
        assert_eq!(info.extra["step"], "12");
        let (mut a, mut b) = (NamedTensors::new(), NamedTensors::new());
        module_tensors(&model, "", &mut a);
        module_tensors(&back, "", &mut b);
        assert_eq!(a, b);
        assert!(
            a.contains_key("blocks.0.attn.q.weight"),
            "names: {:?}",
            a.keys().collect::<Vec<_>>()
        );
        assert!(a.contains_key("text.layers.0.mlp.fc1.bias"));
    }

    #[test]
    fn corrupt_files_give_clear_errors() {
        let device = Device::flex();
        let cfg = tiny();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        save_model(&p, &cfg.init(&device), "teacher", &cfg, &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&p).unwrap();

        let missing = load_model(&dir.path().join("nope.safetensors"), &device)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read"), "{missing}");

        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let truncated = load_model(&p, &device).unwrap_err().to_string();
        assert!(truncated.contains("truncated"), "{truncated}");

        std::fs::write(&p, b"hello, I am a text file").unwrap();
        let foreign = load_model(&p, &device).unwrap_err().to_string();
        assert!(foreign.contains("not a safetensors file"), "{foreign}");

        // A valid safetensors file that is not a Flick checkpoint.
        let t = NamedTensors::from([("w".to_string(), (vec![2], vec![1.0, 2.0]))]);
        write_safetensors(&p, &t, BTreeMap::new()).unwrap();
        let not_flick = load_model(&p, &device).unwrap_err().to_string();
        assert!(not_flick.contains("not a Flick checkpoint"), "{not_flick}");

        // Right format, wrong shapes: a model of another width.
        let other = tiny().with_dim(32);
        let mut tensors = NamedTensors::new();
        module_tensors(&other.init(&device), "", &mut tensors);
        write_safetensors(
            &p,
            &tensors,
            model_metadata("teacher", &cfg, &BTreeMap::new()),
        )
        .unwrap();
        let mismatch = load_model(&p, &device).unwrap_err().to_string();
        assert!(
            mismatch.contains("shape") && mismatch.contains("model expects"),
            "{mismatch}"
        );

        // Missing tensors.
        let mut tensors = NamedTensors::new();
        module_tensors(&cfg.init(&device), "", &mut tensors);
        tensors.remove("final_proj.weight");
        write_safetensors(
            &p,
            &tensors,
            model_metadata("teacher", &cfg, &BTreeMap::new()),
        )
        .unwrap();
        let gone = load_model(&p, &device).unwrap_err().to_string();
        assert!(gone.contains("final_proj.weight: missing"), "{gone}");
    }

    #[test]
    fn an_f16_copy_is_half_the_size_loads_and_generates_the_same_clip() {
        let device = Device::flex();
        let cfg = tiny();
        let model = cfg.init(&device);
        let dir = tempfile::tempdir().unwrap();
        let (full, halfp) = (
            dir.path().join("m.safetensors"),
            dir.path().join("m16.safetensors"),
        );
        save_model(&full, &model, "generator", &cfg, &BTreeMap::new()).unwrap();
        let max_change = convert_to_f16(&full, &halfp).unwrap();
        // Rounding to f16 moves a weight by at most half a unit in the last place: 2⁻¹¹ of it
        // (the init is random: the bound scales with the largest weight, not a fixed 1e-3).
        let mut weights = NamedTensors::new();
        module_tensors(&model, "", &mut weights);
        let largest = weights
            .values()
            .flat_map(|(_, v)| v.iter())
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max_change > 0.0 && max_change <= largest * 2f32.powi(-11) * 1.001,
            "largest weight change {max_change} (largest weight {largest})"
        );
        let (a, b) = (
            std::fs::metadata(&full).unwrap().len(),
            std::fs::metadata(&halfp).unwrap().len(),
        );
        assert!(b * 10 < a * 6, "f16 copy {b} bytes vs f32 {a}");
        let (back, info) = load_model(&halfp, &device).unwrap();
        assert_eq!(info.extra["stored_dtype"], "f16");
        let (mut wa, mut wb) = (NamedTensors::new(), NamedTensors::new());
        module_tensors(&model, "", &mut wa);
        module_tensors(&back, "", &mut wb);
        for (name, (_, x)) in &wa {
            for (u, v) in x.iter().zip(&wb[name].1) {
                assert!(
                    (u - v).abs() <= u.abs() * 1e-3 + 1e-7,
                    "{name}: {u} became {v}"
                );
            }
        }
        let g32 = crate::generate::Generator::load(&full, &device).unwrap();
        let g16 = crate::generate::Generator::load(&halfp, &device).unwrap();
        let (c32, c16) = (
            g32.generate("a red circle", 3, 1, 1.0).unwrap(),
            g16.generate("a red circle", 3, 1, 1.0).unwrap(),
        );
        let differ = c32
            .rgba
            .iter()
            .zip(&c16.rgba)
            .filter(|(x, y)| x.abs_diff(**y) > 2)
            .count();
        assert!(
            differ == 0,
            "{differ} channel values moved by more than 2/255"
        );
        // A weight out of f16's range is refused, not turned into infinity.
        let t = NamedTensors::from([("w".to_string(), (vec![2], vec![1.0, 1e6]))]);
        write_safetensors(&full, &t, BTreeMap::new()).unwrap();
        let err = convert_to_f16(&full, &halfp).unwrap_err().to_string();
        assert!(err.contains("does not fit in f16"), "{err}");
    }
}
