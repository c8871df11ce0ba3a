//! The teacher-pairs cache: `(z, caption, x_teacher)` triples, where `x_teacher` is the teacher's
//! Euler ODE solution from the noise `z` for the caption (with guidance).
//!
//! # Format
//!
//! A folder of shards `pairs-00000.safetensors`, `pairs-00001.safetensors`, … Shard `k` holds
//! items `k·S .. k·S + n` of the stream (`S` = `shard_size` of the metadata, `n ≤ S`):
//! - tensor `z`: f32 `[n, 3, T, H, W]`, the initial noise;
//! - tensor `x`: f32 `[n, 3, T, H, W]`, the teacher's clip in [−1, 1] (not clamped);
//! - metadata `format = "flick-pairs/1"`, `captions` (JSON array of n strings), `shard_size`,
//!   `teacher` (checkpoint path), `steps`, `guidance`, `shift`, `seed`.
//!
//! Shards are written atomically, so a cache interrupted at any point is valid; making it again
//! with the same settings skips the shards already there (resume). The files open in Python's
//! `safetensors` like every Flick file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::checkpoint::{NamedTensors, read_safetensors, write_safetensors};

/// Value of the `format` metadata key of a shard.
pub const FORMAT: &str = "flick-pairs/1";

/// One shard in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// `[n, 3, T, H, W]`
    pub shape: [usize; 5],
    pub z: Vec<f32>,
    pub x: Vec<f32>,
    pub captions: Vec<String>,
    /// How the pairs were made (teacher, steps, guidance, shift, seed, shard_size).
    pub meta: BTreeMap<String, String>,
}

impl Shard {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.shape[0]
    }
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
    /// Values per clip.
    pub fn clip_len(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Path of shard `k` in `dir`.
pub fn shard_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("pairs-{k:05}.safetensors"))
}

/// Write a shard atomically.
pub fn write_shard(path: &Path, shard: &Shard) -> Result<(), Error> {
    let n = shard.len();
    let per = shard.clip_len();
    if shard.z.len() != n * per || shard.x.len() != n * per || shard.captions.len() != n {
        return Err(Error::Data(format!(
            "pairs shard {}: {} z values, {} x values and {} captions for shape {:?}",
            path.display(),
            shard.z.len(),
            shard.x.len(),
            shard.captions.len(),
            shard.shape
        )));
    }
    let mut tensors = NamedTensors::new();
    tensors.insert("z".into(), (shard.shape.to_vec(), shard.z.clone()));
    tensors.insert("x".into(), (shard.shape.to_vec(), shard.x.clone()));
    let mut meta = shard.meta.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert(
        "captions".into(),
        serde_json::to_string(&shard.captions).expect("strings serialise"),
    );
    write_safetensors(path, &tensors, meta)
}

/// Read and check a shard.
pub fn read_shard(path: &Path) -> Result<Shard, Error> {
    let (mut tensors, mut meta) = read_safetensors(path)?;
    let bad = |what: String| {
        Error::Data(format!(
            "{}: not a Flick pairs shard: {what}",
            path.display()
        ))
    };
    match meta.remove("format") {
        Some(f) if f == FORMAT => {}
        other => return Err(bad(format!("format {other:?}, expected {FORMAT:?}"))),
    }
    let captions: Vec<String> = serde_json::from_str(
        &meta
            .remove("captions")
            .ok_or_else(|| bad("no captions".into()))?,
    )
    .map_err(|e| bad(format!("captions: {e}")))?;
    let (zs, z) = tensors
        .remove("z")
        .ok_or_else(|| bad("no tensor z".into()))?;
    let (xs, x) = tensors
        .remove("x")
        .ok_or_else(|| bad("no tensor x".into()))?;
    if zs != xs || zs.len() != 5 || zs[0] != captions.len() {
        return Err(bad(format!(
            "z {zs:?}, x {xs:?} and {} captions do not agree",
            captions.len()
        )));
    }
    Ok(Shard {
        shape: [zs[0], zs[1], zs[2], zs[3], zs[4]],
        z,
        x,
        captions,
        meta,
    })
}

/// The shards of a cache folder, in order. An error if there are none or the numbering has a
/// gap (a cache is a prefix of its stream).
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Data(format!("pairs folder {}: {e}", dir.display())))?;
    let mut ks: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("pairs-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    ks.sort_unstable();
    if ks.is_empty() {
        return Err(Error::Data(format!(
            "{} holds no pairs shards (pairs-NNNNN.safetensors); make them with `flick distill pairs`",
            dir.display()
        )));
    }
    if let Some(k) = ks
        .iter()
        .enumerate()
        .find(|(i, k)| *i != **k)
        .map(|(i, _)| i)
    {
        return Err(Error::Data(format!(
            "{}: shard {k} is missing (the cache must be a prefix of its stream; run `flick distill pairs` again to fill it)",
            dir.display()
        )));
    }
    Ok(ks.into_iter().map(|k| shard_path(dir, k)).collect())
}

/// Every pair of a cache folder, concatenated.
pub fn read_all(dir: &Path) -> Result<Shard, Error> {
    let mut all: Option<Shard> = None;
    for path in list_shards(dir)? {
        let s = read_shard(&path)?;
        match &mut all {
            None => all = Some(s),
            Some(a) => {
                if a.shape[1..] != s.shape[1..] {
                    return Err(Error::Data(format!(
                        "{}: clip shape {:?} differs from the first shard's {:?}",
                        path.display(),
                        &s.shape[1..],
                        &a.shape[1..]
                    )));
                }
                a.shape[0] += s.shape[0];
                a.z.extend(s.z);
                a.x.extend(s.x);
                a.captions.extend(s.captions);
            }
        }
    }
    Ok(all.expect("list_shards returns at least one"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: usize, seed: f32) -> Shard {
        let per = 3 * 2 * 8 * 8;
        Shard {
            shape: [n, 3, 2, 8, 8],
            z: (0..n * per)
                .map(|i| (i as f32 * 0.37 + seed).sin())
                .collect(),
            x: (0..n * per)
                .map(|i| (i as f32 * 0.11 - seed).cos())
                .collect(),
            captions: (0..n).map(|i| format!("caption {i} — ünïcode")).collect(),
            meta: [("steps".to_string(), "25".to_string())].into(),
        }
    }

    #[test]
    fn shards_round_trip_and_bad_caches_are_named() {
        let dir = std::env::temp_dir().join(format!("flick-pairs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            list_shards(&dir)
                .unwrap_err()
                .to_string()
                .contains("no pairs shards")
        );
        let (a, b) = (shard(3, 0.5), shard(2, 1.5));
        write_shard(&shard_path(&dir, 0), &a).unwrap();
        let back = read_shard(&shard_path(&dir, 0)).unwrap();
        assert_eq!(
            (back.shape, &back.z, &back.x, &back.captions),
            (a.shape, &a.z, &a.x, &a.captions)
        );
        assert_eq!(back.meta.get("steps").map(String::as_str), Some("25"));
        // A gap in the numbering is an error naming the missing shard.
        write_shard(&shard_path(&dir, 2), &b).unwrap();
        assert!(
            list_shards(&dir)
                .unwrap_err()
                .to_string()
                .contains("shard 1 is missing")
        );
        write_shard(&shard_path(&dir, 1), &b).unwrap();
        let all = read_all(&dir).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(&all.captions[3..5], &b.captions[..]);
        // Not a shard: a clear error.
        let other = dir.join("pairs-00003.safetensors");
        write_safetensors(&other, &NamedTensors::new(), BTreeMap::new()).unwrap();
        let err = read_all(&dir).unwrap_err().to_string();
        assert!(
            err.contains("pairs-00003")
                && (err.contains("not a Flick pairs shard")
                    || err.contains("not a safetensors file")),
            "{err}"
        );
        // Mismatched counts are refused on write.
        let mut broken = shard(2, 0.0);
        broken.captions.pop();
        assert!(write_shard(&dir.join("x.safetensors"), &broken).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
