//! The attribute probe: a small spatio-temporal CNN trained on ground-truth procedural clips to
//! read every attribute of the (first) object — shape, colour, size, motion — and the
//! background, with its penultimate feature vector exposed for the distribution metrics
//! (Fréchet distance, precision/recall, diversity).
//!
//! Data flow: `[B, 3, T, H, W]` clip → four 3×3×3 convolutions with SiLU (the last three
//! stride 2 in space, the third also in time, each followed by a group norm) → mean and max
//! over the remaining (t, y, x) cells, side by side (the max keeps a small object's shape
//! response from being averaged into the background) → linear + SiLU = features `[B, F]` →
//! one linear layer giving the logits of all five heads side by side (`[B, 23]`, split by
//! [`HEADS`]). Temporal 3×3×3 kernels see local motion direction at every layer, so the pooled
//! features keep it even though positions are averaged away.

use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu};
use serde::{Deserialize, Serialize};

use crate::data::shapes::{Attributes, Background, Color, Motion, Shape, Size};

/// The five heads: name and number of classes, in logit order.
pub const HEADS: [(&str, usize); 5] = [
    ("shape", Shape::ALL.len()),
    ("color", Color::ALL.len()),
    ("size", Size::ALL.len()),
    ("motion", Motion::ALL.len()),
    ("background", Background::ALL.len()),
];

/// Total logits over all heads.
pub fn total_classes() -> usize {
    HEADS.iter().map(|h| h.1).sum()
}

/// Probe architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Clip geometry the probe reads (clips of other sizes are an error).
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Channels of the four convolutions.
    pub channels: [usize; 4],
    /// Width of the feature vector.
    pub features: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            frames: 8,
            height: 32,
            width: 32,
            channels: [16, 32, 64, 96],
            features: 128,
        }
    }
}

impl ProbeConfig {
    /// Check the geometry and widths (a config read from a file or a checkpoint).
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.frames == 0
            || self.height == 0
            || self.width == 0
            || !self.height.is_multiple_of(8)
            || !self.width.is_multiple_of(8)
        {
            return Err(crate::Error::Config(format!(
                "probe clips must have ≥ 1 frame and height/width multiples of 8, got {}×{}×{}",
                self.frames, self.height, self.width
            )));
        }
        if self.channels.contains(&0) || self.features == 0 {
            return Err(crate::Error::Config(
                "probe channels and features must be ≥ 1".into(),
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Probe {
        crate::params::with_backend_rng(device, None, || self.init_unlocked(device))
    }

    fn init_unlocked(&self, device: &Device) -> Probe {
        let conv = |i: usize, o: usize, stride: [usize; 3]| {
            Conv3dConfig::new([i, o], [3, 3, 3])
                .with_stride(stride)
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .init(device)
        };
        let [a, b, c, d] = self.channels;
        Probe {
            c1: conv(3, a, [1, 1, 1]),
            c2: conv(a, b, [1, 2, 2]),
            c3: conv(b, c, [2, 2, 2]),
            c4: conv(c, d, [1, 2, 2]),
            fc: LinearConfig::new(2 * d, self.features).init(device),
            heads: LinearConfig::new(self.features, total_classes()).init(device),
        }
    }
}

/// Group norm (4 channels per group where possible, no affine) after the strided convolutions.
fn norm(x: Tensor<5>) -> Tensor<5> {
    let c = x.dims()[1];
    let groups = if c.is_multiple_of(4) { c / 4 } else { 1 };
    crate::model::layers::group_norm(x, groups)
}

/// See the module docs.
#[derive(Module, Debug)]
pub struct Probe {
    pub c1: Conv3d,
    pub c2: Conv3d,
    pub c3: Conv3d,
    pub c4: Conv3d,
    pub fc: Linear,
    pub heads: Linear,
}

impl Probe {
    /// `x: [B, 3, T, H, W]` in [-1, 1] → (features `[B, F]`, logits `[B, 23]`).
    pub fn forward(&self, x: Tensor<5>) -> (Tensor<2>, Tensor<2>) {
        let h = silu(self.c1.forward(x));
        let h = silu(norm(self.c2.forward(h)));
        let h = silu(norm(self.c3.forward(h)));
        let h = silu(norm(self.c4.forward(h)));
        let [b, c, t, y, w] = h.dims();
        let cells = h.reshape([b, c, t * y * w]);
        let pooled = Tensor::cat(
            vec![
                cells.clone().mean_dim(2).reshape([b, c]),
                cells.max_dim(2).reshape([b, c]),
            ],
            1,
        );
        let features = silu(self.fc.forward(pooled));
        let logits = self.heads.forward(features.clone());
        (features, logits)
    }
}

/// Class indices of a clip's (first object's) attributes, in [`HEADS`] order.
pub fn labels(a: &Attributes) -> [usize; 5] {
    let o = a.main();
    [
        o.shape.index(),
        o.color.index(),
        o.size.index(),
        o.motion.index(),
        a.background.index(),
    ]
}

/// Summed cross-entropy of the five heads (each averaged over the batch).
/// `logits: [B, 23]`, `labels`: one `[usize; 5]` per row.
pub fn loss(logits: Tensor<2>, labels: &[[usize; 5]]) -> Tensor<1> {
    let [b, k] = logits.dims();
    let device = logits.device();
    let mut offset = 0;
    let mut total: Option<Tensor<1>> = None;
    for (head, &(_, n)) in HEADS.iter().enumerate() {
        let mut onehot = vec![0f32; b * n];
        for (i, l) in labels.iter().enumerate() {
            onehot[i * n + l[head]] = 1.0;
        }
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [b, n]), &device);
        let lp = log_softmax(logits.clone().narrow(1, offset, n), 1);
        let ce = (lp * onehot).sum().neg() / b as f32;
        total = Some(match total {
            Some(t) => t + ce,
            None => ce,
        });
        offset += n;
    }
    debug_assert_eq!(offset, k);
    total.expect("five heads")
}

/// Arg-max class of each head, per row of `logits: [B, 23]` (synchronous read).
pub fn predict(logits: Tensor<2>) -> Vec<[usize; 5]> {
    let [b, k] = logits.dims();
    let v: Vec<f32> = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
    (0..b)
        .map(|i| {
            let row = &v[i * k..(i + 1) * k];
            let mut out = [0usize; 5];
            let mut offset = 0;
            for (head, &(_, n)) in HEADS.iter().enumerate() {
                let slice = &row[offset..offset + n];
                out[head] = (0..n)
                    .max_by(|&a, &c| slice[a].total_cmp(&slice[c]))
                    .unwrap_or(0);
                offset += n;
            }
            out
        })
        .collect()
}

/// Save a probe: weights plus `format`, `kind = "probe"`, the config and `extra` metadata
/// (training step, held-out accuracy).
pub fn save(
    path: &std::path::Path,
    probe: &Probe,
    config: &ProbeConfig,
    extra: &std::collections::BTreeMap<String, String>,
) -> Result<(), crate::Error> {
    use crate::checkpoint::{FORMAT, NamedTensors, module_tensors, write_safetensors};
    let mut tensors = NamedTensors::new();
    module_tensors(probe, "", &mut tensors);
    let mut meta = extra.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("kind".into(), "probe".into());
    meta.insert(
        "config".into(),
        serde_json::to_string(config).expect("config serialises"),
    );
    write_safetensors(path, &tensors, meta)
}

/// Load a probe saved by [`save`]; a file that is not a probe checkpoint is a clear error.
pub fn load(
    path: &std::path::Path,
    device: &Device,
) -> Result<
    (
        Probe,
        ProbeConfig,
        std::collections::BTreeMap<String, String>,
    ),
    crate::Error,
> {
    use crate::Error;
    let (tensors, meta) = crate::checkpoint::read_safetensors(path)?;
    let bad = |m: String| Error::Checkpoint(format!("{}: {m}", path.display()));
    if meta.get("format").map(String::as_str) != Some(crate::checkpoint::FORMAT) {
        return Err(bad("not a Flick checkpoint (no \"format\" metadata)".into()));
    }
    if meta.get("kind").map(String::as_str) != Some("probe") {
        return Err(bad(format!(
            "holds a {:?}, not an attribute probe",
            meta.get("kind").cloned().unwrap_or_default()
        )));
    }
    let config: ProbeConfig = serde_json::from_str(
        meta.get("config")
            .ok_or_else(|| bad("no probe config in the metadata".into()))?,
    )
    .map_err(|e| bad(format!("probe config unreadable: {e}")))?;
    config.validate().map_err(|e| bad(e.to_string()))?;
    let probe = crate::checkpoint::load_module(config.init(device), &tensors, "", device)
        .map_err(|e| bad(e.to_string()))?;
    Ok((probe, config, meta))
}

/// Per-head accuracy and all-correct rate of `probe` on `n` real single-object clips of
/// `split` (procedural seed `seed`), read in batches of `batch`.
pub fn accuracy(
    probe: &Probe,
    config: &ProbeConfig,
    split: crate::data::shapes::Split,
    n: usize,
    seed: u64,
    batch: usize,
    device: &Device,
) -> ([f64; 5], f64) {
    use crate::data::shapes::{ShapesConfig, ShapesSource};
    let source = ShapesSource::new(
        ShapesConfig {
            frames: config.frames,
            height: config.height,
            width: config.width,
            two_object_prob: 0.0,
        },
        seed,
    )
    .expect("valid geometry");
    let mut predicted = Vec::with_capacity(n);
    let mut truth = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let samples: Vec<_> = (start..(start + batch).min(n))
            .map(|i| source.sample(split, i as u64))
            .collect();
        truth.extend(samples.iter().map(|s| labels(&s.attributes)));
        let clips: Vec<_> = samples.into_iter().map(|s| s.clip).collect();
        let (data, shape) = crate::data::stack(&clips);
        let (_, logits) =
            probe.forward(Tensor::<5>::from_data(TensorData::new(data, shape), device));
        predicted.extend(predict(logits));
    }
    super::metrics::adherence(&predicted, &truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_loss_of_a_random_probe() {
        let device = Device::flex();
        let cfg = ProbeConfig {
            channels: [4, 4, 8, 8],
            features: 16,
            ..Default::default()
        };
        // Seeded: the weights and the input are the same on every run.
        let (probe, x) = crate::params::with_backend_rng(&device, Some(7), || {
            let probe = cfg.init(&device);
            let x = Tensor::<5>::random(
                [2, 3, 8, 32, 32],
                burn::tensor::Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            (probe, x)
        });
        let (f, l) = probe.forward(x);
        assert_eq!(f.dims(), [2, 16]);
        assert_eq!(l.dims(), [2, total_classes()]);
        let labels = [[0, 1, 0, 2, 3], [3, 6, 1, 5, 0]];
        let loss: f32 = loss(l.clone(), &labels).into_scalar();
        // The textbook sum over heads of the batch-mean cross-entropy, in f64.
        let v: Vec<f32> = l.clone().into_data().try_to_vec::<f32>().unwrap();
        let k = total_classes();
        let mut expected = 0f64;
        for (i, lab) in labels.iter().enumerate() {
            let mut offset = 0;
            for (head, &(_, n)) in HEADS.iter().enumerate() {
                let row: Vec<f64> = v[i * k + offset..i * k + offset + n]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let max = row.iter().cloned().fold(f64::MIN, f64::max);
                let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                expected += (lse - row[lab[head]]) / labels.len() as f64;
                offset += n;
            }
        }
        assert!(
            (loss as f64 - expected).abs() < 1e-4 * expected.max(1.0),
            "{loss} vs {expected}"
        );
        // Small logits at init: near Σ ln(n) over the heads, far from a confident wrong guess.
        let chance: f32 = HEADS.iter().map(|h| (h.1 as f32).ln()).sum();
        assert!((loss - chance).abs() < 2.0, "{loss} vs {chance}");
        let p = predict(l);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|r| r.iter().zip(HEADS).all(|(c, h)| *c < h.1)));
    }

    #[test]
    fn bad_geometry_is_an_error_not_a_panic() {
        assert!(ProbeConfig::default().validate().is_ok());
        assert!(
            ProbeConfig {
                height: 30,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            ProbeConfig {
                frames: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            ProbeConfig {
                channels: [16, 0, 64, 96],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn loss_prefers_the_right_class() {
        let device = Device::flex();
        let mut right = vec![0f32; total_classes()];
        let labels = [2usize, 4, 1, 3, 0];
        let mut off = 0;
        for (h, &(_, n)) in HEADS.iter().enumerate() {
            right[off + labels[h]] = 8.0;
            off += n;
        }
        let l = Tensor::<2>::from_data(
            TensorData::new(right.clone(), [1, total_classes()]),
            &device,
        );
        let good: f32 = loss(l.clone(), &[labels]).into_scalar();
        let bad: f32 = loss(l.clone(), &[[0, 0, 0, 0, 1]]).into_scalar();
        assert!(good < 0.1 && bad > 10.0, "{good} {bad}");
        assert_eq!(predict(l), vec![labels]);
    }
}
