//! The clip type the outside world sees (u8 RGBA frames) and its exports: animated GIF, PNG
//! frames, and frame-grid PNGs (one row per clip, one column per frame).

use std::path::Path;

use crate::Error;
use crate::data::Clip;

/// `frames` RGBA8 images of `height × width`, frame-major.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Video {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// `frames × height × width × 4` bytes.
    pub rgba: Vec<u8>,
}

impl Video {
    /// An all-black, opaque video.
    pub fn new(frames: usize, height: usize, width: usize) -> Self {
        let mut rgba = vec![0u8; frames * height * width * 4];
        rgba.chunks_mut(4).for_each(|p| p[3] = 255);
        Self {
            frames,
            height,
            width,
            rgba,
        }
    }

    /// Convert a model clip in [-1, 1] (clamped) to RGBA8.
    pub fn from_clip(clip: &Clip) -> Self {
        let mut v = Self::new(clip.frames, clip.height, clip.width);
        for t in 0..clip.frames {
            for y in 0..clip.height {
                for x in 0..clip.width {
                    let i = ((t * clip.height + y) * clip.width + x) * 4;
                    for c in 0..3 {
                        let value = (clip.at(c, t, y, x).clamp(-1.0, 1.0) + 1.0) * 127.5;
                        v.rgba[i + c] = value.round() as u8;
                    }
                }
            }
        }
        v
    }

    /// Bytes of frame `f`.
    pub fn frame(&self, f: usize) -> &[u8] {
        let n = self.height * self.width * 4;
        &self.rgba[f * n..(f + 1) * n]
    }

    /// Mutable bytes of frame `f`.
    pub fn frame_mut(&mut self, f: usize) -> &mut [u8] {
        let n = self.height * self.width * 4;
        &mut self.rgba[f * n..(f + 1) * n]
    }

    /// Nearest-neighbour upscale by an integer factor (small clips are unreadable at 1×).
    pub fn upscale(&self, k: usize) -> Self {
        let (h, w) = (self.height * k, self.width * k);
        let mut out = Self::new(self.frames, h, w);
        for f in 0..self.frames {
            for y in 0..h {
                for x in 0..w {
                    let s = ((f * self.height + y / k) * self.width + x / k) * 4;
                    let d = ((f * h + y) * w + x) * 4;
                    out.rgba[d..d + 4].copy_from_slice(&self.rgba[s..s + 4]);
                }
            }
        }
        out
    }

    /// Write an endlessly looping animated GIF at `fps` frames per second (written to a temp
    /// file and renamed, so a failure never leaves half a GIF).
    pub fn write_gif(&self, path: &Path, fps: u32) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
        let tmp = path.with_extension("gif.tmp");
        {
            let file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            self.encode_gif(file, fps)
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The animated GIF as bytes (the browser's download).
    pub fn gif_bytes(&self, fps: u32) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_gif(&mut out, fps).map_err(Error::Io)?;
        Ok(out)
    }

    fn encode_gif<W: std::io::Write>(&self, out: W, fps: u32) -> Result<(), String> {
        let mut enc = gif::Encoder::new(out, self.width as u16, self.height as u16, &[])
            .map_err(|e| e.to_string())?;
        enc.set_repeat(gif::Repeat::Infinite)
            .map_err(|e| e.to_string())?;
        for f in 0..self.frames {
            let mut pixels = self.frame(f).to_vec();
            let mut frame =
                gif::Frame::from_rgba_speed(self.width as u16, self.height as u16, &mut pixels, 10);
            frame.delay = (100 / fps.max(1)).max(1) as u16;
            enc.write_frame(&frame).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Write `frame_000.png`, `frame_001.png`, … into `dir` (created if missing).
    pub fn write_png_frames(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        for f in 0..self.frames {
            let img = image::RgbaImage::from_raw(
                self.width as u32,
                self.height as u32,
                self.frame(f).to_vec(),
            )
            .expect("frame size");
            let p = dir.join(format!("frame_{f:03}.png"));
            img.save(&p)
                .map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}

/// A PNG grid: one row per video (all the same size), one column per frame, 1-pixel gaps.
pub fn frame_grid(videos: &[Video], scale: usize) -> image::RgbaImage {
    let first = &videos[0];
    let (h, w) = (first.height * scale, first.width * scale);
    let gap = 2;
    let cols = first.frames;
    let mut img = image::RgbaImage::from_pixel(
        (cols * (w + gap) + gap) as u32,
        (videos.len() * (h + gap) + gap) as u32,
        image::Rgba([255, 255, 255, 255]),
    );
    for (r, v) in videos.iter().enumerate() {
        let v = v.upscale(scale);
        for f in 0..v.frames.min(cols) {
            for y in 0..h {
                for x in 0..w {
                    let s = ((f * h + y) * w + x) * 4;
                    let px = image::Rgba([v.rgba[s], v.rgba[s + 1], v.rgba[s + 2], 255]);
                    img.put_pixel(
                        (gap + f * (w + gap) + x) as u32,
                        (gap + r * (h + gap) + y) as u32,
                        px,
                    );
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_round_trip_keeps_frames_and_size() {
        let clip = Clip {
            data: (0..3 * 4 * 8 * 16)
                .map(|i| ((i % 7) as f32 / 3.0) - 1.0)
                .collect(),
            frames: 4,
            height: 8,
            width: 16,
        };
        let v = Video::from_clip(&clip);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gif");
        v.write_gif(&p, 8).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        let dec = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(file)).unwrap();
        use image::AnimationDecoder;
        let frames = dec.into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].buffer().dimensions(), (16, 8));
        v.write_png_frames(&dir.path().join("frames")).unwrap();
        assert!(dir.path().join("frames/frame_003.png").exists());
    }

    #[test]
    fn clip_values_map_to_bytes() {
        let clip = Clip {
            data: vec![-1.0, 0.0, 1.0, 2.0, -3.0, 1.0],
            frames: 1,
            height: 1,
            width: 2,
        };
        let v = Video::from_clip(&clip);
        // channel-major input: r = [-1, 0], g = [1, 2], b = [-3, 1]
        assert_eq!(&v.rgba, &[0, 255, 0, 255, 128, 255, 255, 255]);
    }
}
