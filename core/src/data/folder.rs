//! Folder datasets: a directory of clips, each an animated GIF or a folder of PNG frames, with
//! captions from `captions.jsonl` (`{"file": ..., "caption": ...}`) or a sidecar `.txt`.
//!
//! Every clip is decoded once at open time, resized (shorter side to fit, centre crop) to the
//! model's size, and `T` frames are sampled evenly over its length (repeating frames of clips
//! shorter than `T`). Unusable files are skipped with a warning that names them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{RgbaImage, imageops::FilterType};

use crate::Error;
use crate::data::{CaptionedClip, Clip};

/// An in-memory, decoded folder of captioned clips.
#[derive(Debug)]
pub struct FolderDataset {
    clips: Vec<CaptionedClip>,
    /// Files that could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl FolderDataset {
    /// Open `dir`, decoding every clip to `frames × height × width`.
    pub fn open(dir: &Path, frames: usize, height: usize, width: usize) -> Result<Self, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::Data(format!("cannot read dataset folder {}: {e}", dir.display()))
        })?;
        let captions = read_captions_jsonl(dir)?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut clips = Vec::new();
        let mut skipped = Vec::new();
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let is_gif = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gif"));
            if !(is_gif || path.is_dir()) {
                continue; // captions.jsonl, sidecar .txt files, anything else
            }
            let caption = captions
                .get(&name)
                .cloned()
                .or_else(|| sidecar_caption(&path));
            let Some(caption) = caption else {
                warn_skip(
                    &mut skipped,
                    &path,
                    "no caption (neither in captions.jsonl nor a sidecar .txt)",
                );
                continue;
            };
            let decoded = if is_gif {
                decode_gif(&path)
            } else {
                decode_png_folder(&path)
            };
            match decoded {
                Ok(frames_rgba) if !frames_rgba.is_empty() => {
                    let clip = to_clip(&frames_rgba, frames, height, width);
                    clips.push(CaptionedClip { clip, caption });
                }
                Ok(_) => warn_skip(&mut skipped, &path, "no frames"),
                Err(e) => warn_skip(&mut skipped, &path, &e),
            }
        }
        if !skipped.is_empty() {
            eprintln!(
                "warning: skipped {} unusable file(s) in {}",
                skipped.len(),
                dir.display()
            );
        }
        if clips.is_empty() {
            return Err(Error::Data(format!(
                "no usable clip in {} (looked for animated .gif files and folders of .png frames, captioned by captions.jsonl or a sidecar .txt; {} skipped)",
                dir.display(),
                skipped.len()
            )));
        }
        Ok(Self { clips, skipped })
    }

    /// Number of usable clips.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// Never true for an opened dataset (an empty folder is an error).
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Clip `index` modulo the dataset size.
    pub fn clip(&self, index: u64) -> CaptionedClip {
        self.clips[(index % self.clips.len() as u64) as usize].clone()
    }
}

fn warn_skip(skipped: &mut Vec<(PathBuf, String)>, path: &Path, why: &str) {
    eprintln!("warning: skipping {}: {why}", path.display());
    skipped.push((path.to_path_buf(), why.to_string()));
}

fn read_captions_jsonl(dir: &Path) -> Result<HashMap<String, String>, Error> {
    let path = dir.join("captions.jsonl");
    let map = HashMap::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => {
            eprintln!(
                "warning: {} ignored: {e} (captions must be UTF-8 text)",
                path.display()
            );
            return Ok(map);
        }
    };
    Ok(parse_captions(&text, &path.display().to_string()))
}

/// The `file → caption` lines of a `captions.jsonl` text (`source` names it in warnings);
/// lines that are not `{"file": ..., "caption": ...}` are skipped with a warning.
pub fn parse_captions(text: &str, source: &str) -> HashMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Line {
        file: String,
        caption: String,
    }
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(line) {
            Ok(l) => {
                map.insert(l.file.trim_end_matches('/').to_string(), l.caption);
            }
            Err(e) => eprintln!(
                "warning: {source} line {}: not {{\"file\": ..., \"caption\": ...}}: {e}",
                i + 1
            ),
        }
    }
    map
}

fn sidecar_caption(path: &Path) -> Option<String> {
    let txt = if path.is_dir() {
        path.join("caption.txt")
    } else {
        path.with_extension("txt")
    };
    let alt = path.with_extension("txt");
    [txt, alt]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn decode_gif(path: &Path) -> Result<Vec<RgbaImage>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    decode_gif_from(std::io::BufReader::new(file))
}

/// Every frame of an animated GIF, composited, under the size and memory limits of a dataset
/// file (frames up to 8192 px a side, 1 GiB decoded in all); an error says what is wrong.
pub fn decode_gif_from(
    reader: impl std::io::BufRead + std::io::Seek,
) -> Result<Vec<RgbaImage>, String> {
    let mut decoder = image::codecs::gif::GifDecoder::new(reader)
        .map_err(|e| format!("not a readable GIF: {e}"))?;
    // Sizes come from the file: bounded before anything is allocated for them.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    image::ImageDecoder::set_limits(&mut decoder, limits)
        .map_err(|e| format!("GIF too large to use: {e}"))?;
    let mut frames = Vec::new();
    let mut bytes = 0u64;
    for frame in image::AnimationDecoder::into_frames(decoder) {
        let frame = frame.map_err(|e| format!("corrupt GIF: {e}"))?;
        let img = frame.into_buffer();
        bytes += img.as_raw().len() as u64;
        if bytes > MAX_DECODED_BYTES {
            return Err(format!(
                "GIF too large to use: its first {} frames of {}×{} already decode to over {} MiB; shorten or downscale it",
                frames.len() + 1,
                img.width(),
                img.height(),
                MAX_DECODED_BYTES >> 20
            ));
        }
        frames.push(img);
    }
    Ok(frames)
}

/// One PNG frame as RGBA, frames up to 8192 px a side and `max_bytes` decoded.
pub fn decode_png_from(
    reader: impl std::io::BufRead + std::io::Seek,
    max_bytes: u64,
) -> Result<RgbaImage, String> {
    let mut reader = image::ImageReader::with_format(reader, image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_bytes);
    reader.limits(limits);
    Ok(reader.decode().map_err(|e| e.to_string())?.to_rgba8())
}

/// The largest frame side a dataset file may have.
const MAX_SIDE: u32 = 8192;
/// The most memory one clip's decoded frames may take.
const MAX_DECODED_BYTES: u64 = 1 << 30;

fn decode_png_folder(dir: &Path) -> Result<Vec<RgbaImage>, String> {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read folder: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    pngs.sort();
    if pngs.is_empty() {
        return Err("folder holds no .png frames".into());
    }
    let mut frames = Vec::with_capacity(pngs.len().min(4096));
    let mut bytes = 0u64;
    for p in &pngs {
        let unreadable =
            |e: &dyn std::fmt::Display| format!("frame {} unreadable: {e}", p.display());
        let file = std::fs::File::open(p).map_err(|e| unreadable(&e))?;
        let budget = MAX_DECODED_BYTES.saturating_sub(bytes).max(1);
        let img =
            decode_png_from(std::io::BufReader::new(file), budget).map_err(|e| unreadable(&e))?;
        bytes += img.as_raw().len() as u64;
        if bytes > MAX_DECODED_BYTES {
            return Err(format!(
                "frames too large to use: the first {} decode to over {} MiB; use fewer or smaller frames",
                frames.len() + 1,
                MAX_DECODED_BYTES >> 20
            ));
        }
        frames.push(img);
    }
    Ok(frames)
}

/// Resize (cover + centre crop) and sample `t` frames evenly; composite alpha over black.
fn to_clip(frames: &[RgbaImage], t: usize, h: usize, w: usize) -> Clip {
    let mut data = vec![0f32; 3 * t * h * w];
    for f in 0..t {
        let src = if t == 1 {
            0
        } else {
            f * (frames.len() - 1) / (t - 1).max(1)
        };
        let img = &frames[src.min(frames.len() - 1)];
        let (iw, ih) = img.dimensions();
        let scale = (w as f32 / iw as f32).max(h as f32 / ih as f32);
        let (rw, rh) = (
            ((iw as f32 * scale).ceil() as u32).max(w as u32),
            ((ih as f32 * scale).ceil() as u32).max(h as u32),
        );
        let resized = image::imageops::resize(img, rw, rh, FilterType::Triangle);
        let (ox, oy) = ((rw - w as u32) / 2, (rh - h as u32) / 2);
        for y in 0..h {
            for x in 0..w {
                let p = resized.get_pixel(ox + x as u32, oy + y as u32);
                let a = p[3] as f32 / 255.0;
                for c in 0..3 {
                    data[((c * t + f) * h + y) * w + x] = (p[c] as f32 / 255.0 * a) * 2.0 - 1.0;
                }
            }
        }
    }
    Clip {
        data,
        frames: t,
        height: h,
        width: w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::Video;

    fn write_gif(path: &Path, frames: usize, color: [u8; 3]) {
        let mut v = Video::new(frames, 20, 24);
        for f in 0..frames {
            for p in v.frame_mut(f).chunks_mut(4) {
                p.copy_from_slice(&[color[0], color[1], color[2], 255]);
            }
        }
        v.write_gif(path, 8).unwrap();
    }

    #[test]
    fn reads_gifs_png_folders_and_skips_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        write_gif(&dir.path().join("a.gif"), 5, [255, 0, 0]);
        std::fs::write(dir.path().join("a.txt"), "a red thing").unwrap();
        write_gif(&dir.path().join("b.gif"), 3, [0, 0, 255]);
        std::fs::write(dir.path().join("broken.gif"), b"GIF89a not really").unwrap();
        std::fs::write(dir.path().join("broken.txt"), "broken").unwrap();
        let frames = dir.path().join("c");
        std::fs::create_dir(&frames).unwrap();
        for i in 0..4 {
            image::RgbaImage::from_pixel(40, 30, image::Rgba([0, 255, 0, 255]))
                .save(frames.join(format!("{i:03}.png")))
                .unwrap();
        }
        std::fs::write(dir.path().join("captions.jsonl"), "{\"file\": \"b.gif\", \"caption\": \"blue\"}\n{\"file\": \"c\", \"caption\": \"green frames\"}\n").unwrap();
        let ds = FolderDataset::open(dir.path(), 8, 16, 16).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.skipped.len(), 1);
        assert!(ds.skipped[0].0.ends_with("broken.gif"));
        let a = ds.clip(0);
        assert_eq!(a.caption, "a red thing");
        assert_eq!((a.clip.frames, a.clip.height, a.clip.width), (8, 16, 16));
        assert!(
            (a.clip.at(0, 7, 8, 8) - 1.0).abs() < 0.02
                && (a.clip.at(1, 7, 8, 8) + 1.0).abs() < 0.02
        );
        let c = ds.clip(2);
        assert_eq!(c.caption, "green frames");
        assert!((c.clip.at(1, 3, 0, 0) - 1.0).abs() < 0.02);
    }

    #[test]
    fn empty_folder_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.gif"), b"nope").unwrap();
        std::fs::write(dir.path().join("x.txt"), "cap").unwrap();
        let err = FolderDataset::open(dir.path(), 8, 16, 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no usable clip"), "{err}");
        assert!(FolderDataset::open(&dir.path().join("missing"), 8, 16, 16).is_err());
    }
}
