//! Training data: the procedural shapes source, folder datasets, and the [`Clip`] both produce.

pub mod folder;
pub mod shapes;

/// A clip as the models see it: RGB in [-1, 1], laid out `[C = 3, T, H, W]` (channel-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    pub data: Vec<f32>,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl Clip {
    /// Value of channel `c`, frame `t`, row `y`, column `x`.
    pub fn at(&self, c: usize, t: usize, y: usize, x: usize) -> f32 {
        self.data[((c * self.frames + t) * self.height + y) * self.width + x]
    }
}

/// A captioned clip from any source.
#[derive(Clone, Debug)]
pub struct CaptionedClip {
    pub clip: Clip,
    pub caption: String,
}

/// Where training clips come from.
pub trait ClipSource: Send + Sync {
    /// Clip `index` of an endless (or cycled) stream; deterministic in `index`.
    fn get(&self, index: u64) -> CaptionedClip;
}

impl ClipSource for shapes::ShapesSource {
    fn get(&self, index: u64) -> CaptionedClip {
        let s = self.sample(shapes::Split::Train, index);
        CaptionedClip {
            clip: s.clip,
            caption: s.caption,
        }
    }
}

impl ClipSource for folder::FolderDataset {
    fn get(&self, index: u64) -> CaptionedClip {
        self.clip(index)
    }
}

/// Stack clips into one `[B, 3, T, H, W]` buffer (row-major), checking they share a shape.
pub fn stack(clips: &[Clip]) -> (Vec<f32>, [usize; 5]) {
    let first = &clips[0];
    let mut data = Vec::with_capacity(clips.len() * first.data.len());
    for c in clips {
        assert_eq!(
            (c.frames, c.height, c.width),
            (first.frames, first.height, first.width),
            "clips of one batch must share a shape"
        );
        data.extend_from_slice(&c.data);
    }
    (
        data,
        [clips.len(), 3, first.frames, first.height, first.width],
    )
}
