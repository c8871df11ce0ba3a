//! Pixel-level readout of (colour, shape, size, motion, background) from a single-object clip.
//!
//! Every step is a fixed rule with its threshold stated; [`tests`] check the readout is right on
//! real procedural clips, which is what makes its verdict on generated clips meaningful.

use crate::data::Clip;
use crate::data::shapes::{Attributes, Background, Color, Motion, Shape, Size};

/// What the readout saw; `None` where the clip shows no object.
#[derive(Clone, Debug, PartialEq)]
pub struct Readout {
    pub background: Background,
    pub color: Option<Color>,
    pub shape: Option<Shape>,
    pub size: Option<Size>,
    pub motion: Option<Motion>,
}

fn rgb(clip: &Clip, t: usize, y: usize, x: usize) -> [f32; 3] {
    [0, 1, 2].map(|c| (clip.at(c, t, y, x) + 1.0) / 2.0)
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|i| (a[i] - b[i]).abs()).sum()
}

fn nearest<T: Copy>(value: [f32; 3], options: &[T], color: impl Fn(T) -> [f32; 3]) -> T {
    *options
        .iter()
        .min_by(|a, b| dist(value, color(**a)).total_cmp(&dist(value, color(**b))))
        .unwrap()
}

/// Read a clip's attributes.
pub fn read(clip: &Clip) -> Readout {
    let (t, h, w) = (clip.frames, clip.height, clip.width);
    // Background: the palette colour most pixels are nearest to.
    let mut votes = [0usize; 4];
    for f in 0..t {
        for y in 0..h {
            for x in 0..w {
                let b = nearest(rgb(clip, f, y, x), Background::ALL, |b| b.rgb());
                votes[b.index()] += 1;
            }
        }
    }
    let background = Background::ALL[(0..4).max_by_key(|&i| votes[i]).unwrap()];
    let bg = background.rgb();

    // Object pixels: differ from the background by more than 0.45 (sum over RGB in [0, 1]).
    let mut centroids = Vec::with_capacity(t);
    let mut colour_sum = [0f32; 3];
    let mut colour_n = 0f32;
    let (mut fill_sum, mut asym_sum, mut side_sum, mut frames_seen) = (0f32, 0f32, 0f32, 0f32);
    for f in 0..t {
        let mut pts = Vec::new();
        let mut far = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let p = rgb(clip, f, y, x);
                let d = dist(p, bg);
                if d > 0.45 {
                    pts.push((x as f32, y as f32));
                    far.push((d, p));
                }
            }
        }
        // Colour from the pixels furthest from the background (anti-aliased edges mix it in).
        let max_d = far.iter().map(|v| v.0).fold(0f32, f32::max);
        for (d, p) in far.iter().filter(|v| v.0 >= 0.8 * max_d) {
            let _ = d;
            (0..3).for_each(|c| colour_sum[c] += p[c]);
            colour_n += 1.0;
        }
        if pts.len() < 4 {
            centroids.push(None);
            continue;
        }
        let n = pts.len() as f32;
        let (cx, cy) = (
            pts.iter().map(|p| p.0).sum::<f32>() / n,
            pts.iter().map(|p| p.1).sum::<f32>() / n,
        );
        centroids.push(Some((cx, cy)));
        let (x0, x1) = pts
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (bw, bh) = (x1 - x0 + 1.0, y1 - y0 + 1.0);
        fill_sum += n / (bw * bh);
        side_sum += bw.max(bh);
        // Vertical asymmetry: share of pixels in the bottom half of the box minus the top half.
        let mid = (y0 + y1) / 2.0;
        asym_sum += (pts.iter().filter(|p| p.1 > mid).count() as f32
            - pts.iter().filter(|p| p.1 < mid).count() as f32)
            / n;
        frames_seen += 1.0;
    }
    if frames_seen < (t as f32 / 2.0).max(1.0) || colour_n < 1.0 {
        return Readout {
            background,
            color: None,
            shape: None,
            size: None,
            motion: None,
        };
    }
    let colour = [0, 1, 2].map(|c| colour_sum[c] / colour_n);
    let color = nearest(colour, Color::ALL, |c| c.rgb());
    let (fill, asym, side) = (
        fill_sum / frames_seen,
        asym_sum / frames_seen,
        side_sum / frames_seen,
    );
    // Fill of the bounding box: square ≈ 1, circle ≈ π/4, triangle ≈ 1/2 (bottom-heavy), cross ≈ 0.55.
    let shape = if fill > 0.88 {
        Shape::Square
    } else if fill > 0.68 {
        Shape::Circle
    } else if asym > 0.25 {
        Shape::Triangle
    } else {
        Shape::Cross
    };
    // Bounding-box side relative to the frame (anti-aliased edge included): circles and crosses
    // span 2r (small ≈ 0.29, large ≈ 0.47), squares and triangles ≈ 1.6r (≈ 0.24 vs ≈ 0.38).
    let cut = if matches!(shape, Shape::Circle | Shape::Cross) {
        0.38
    } else {
        0.31
    };
    let size = if side / (h.min(w) as f32) > cut {
        Size::Large
    } else {
        Size::Small
    };
    let motion = read_motion(&centroids, h.min(w) as f32);
    Readout {
        background,
        color: Some(color),
        shape: Some(shape),
        size: Some(size),
        motion,
    }
}

fn read_motion(centroids: &[Option<(f32, f32)>], side: f32) -> Option<Motion> {
    let track: Vec<(f32, f32)> = centroids.iter().flatten().copied().collect();
    if centroids.len() < 2 {
        return Some(Motion::Still);
    }
    if track.len() < 2 {
        return None;
    }
    let (first, last) = (track[0], track[track.len() - 1]);
    let (dx, dy) = (last.0 - first.0, last.1 - first.1);
    let net = (dx * dx + dy * dy).sqrt();
    let path: f32 = track
        .windows(2)
        .map(|w| ((w[1].0 - w[0].0).powi(2) + (w[1].1 - w[0].1).powi(2)).sqrt())
        .sum();
    if path < 0.08 * side {
        return Some(Motion::Still);
    }
    // Turning: signed area swept around the track's centre (positive = clockwise on screen,
    // where rows grow downwards).
    let n = track.len() as f32;
    let (mx, my) = (
        track.iter().map(|p| p.0).sum::<f32>() / n,
        track.iter().map(|p| p.1).sum::<f32>() / n,
    );
    let mut turn = 0f32;
    for w in track.windows(2) {
        let a0 = (w[0].1 - my).atan2(w[0].0 - mx);
        let a1 = (w[1].1 - my).atan2(w[1].0 - mx);
        let mut d = a1 - a0;
        if d > std::f32::consts::PI {
            d -= std::f32::consts::TAU;
        }
        if d < -std::f32::consts::PI {
            d += std::f32::consts::TAU;
        }
        turn += d;
    }
    if net < 0.7 * path && turn > 1.5 {
        return Some(Motion::Clockwise);
    }
    Some(if dx.abs() > dy.abs() {
        if dx < 0.0 {
            Motion::Left
        } else {
            Motion::Right
        }
    } else if dy < 0.0 {
        Motion::Up
    } else {
        Motion::Down
    })
}

/// Per-attribute agreement of readouts with the prompted attributes (first object).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Agreement {
    pub clips: usize,
    pub color: f32,
    pub shape: f32,
    pub size: f32,
    pub motion: f32,
    pub background: f32,
    /// All five right.
    pub all: f32,
}

/// Compare readouts with the attributes each clip was meant to show.
pub fn agreement(pairs: &[(Readout, Attributes)]) -> Agreement {
    let n = pairs.len().max(1) as f32;
    let rate = |f: &dyn Fn(&Readout, &Attributes) -> bool| {
        pairs.iter().filter(|(r, a)| f(r, a)).count() as f32 / n
    };
    Agreement {
        clips: pairs.len(),
        color: rate(&|r, a| r.color == Some(a.main().color)),
        shape: rate(&|r, a| r.shape == Some(a.main().shape)),
        size: rate(&|r, a| r.size == Some(a.main().size)),
        motion: rate(&|r, a| r.motion == Some(a.main().motion)),
        background: rate(&|r, a| r.background == a.background),
        all: rate(&|r, a| {
            let o = a.main();
            r.color == Some(o.color)
                && r.shape == Some(o.shape)
                && r.size == Some(o.size)
                && r.motion == Some(o.motion)
                && r.background == a.background
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shapes::{ShapesConfig, ShapesSource, Split};

    fn real(split: Split, n: u64) -> Agreement {
        let s = ShapesSource::new(
            ShapesConfig {
                two_object_prob: 0.0,
                ..ShapesConfig::default()
            },
            11,
        )
        .unwrap();
        let pairs: Vec<_> = (0..n)
            .map(|i| s.sample(split, i))
            .map(|x| (read(&x.clip), x.attributes))
            .collect();
        agreement(&pairs)
    }

    #[test]
    fn reads_real_clips_correctly() {
        for split in [Split::Train, Split::HeldOut] {
            let a = real(split, 400);
            eprintln!("{split:?}: {a:?}");
            assert!(a.color >= 0.99 && a.background >= 0.99, "{a:?}");
            assert!(a.motion >= 0.97, "{a:?}");
            assert!(a.size >= 0.95, "{a:?}");
            assert!(a.shape >= 0.9, "{a:?}");
        }
    }

    #[test]
    fn blank_and_noise_clips_are_not_credited() {
        let s = ShapesSource::new(ShapesConfig::default(), 1).unwrap();
        let x = s.sample(Split::Train, 0);
        let blank = Clip {
            data: vec![-1.0; x.clip.data.len()],
            ..x.clip.clone()
        };
        let r = read(&blank);
        assert_eq!((r.color, r.motion), (None, None));
        // A clip with its frames shuffled backwards reads the opposite linear motion.
        let s = ShapesSource::new(
            ShapesConfig {
                two_object_prob: 0.0,
                ..ShapesConfig::default()
            },
            2,
        )
        .unwrap();
        let mut checked = 0;
        for i in 0..100 {
            let x = s.sample(Split::Train, i);
            let m = x.attributes.main().motion;
            let opposite = match m {
                Motion::Left => Motion::Right,
                Motion::Right => Motion::Left,
                Motion::Up => Motion::Down,
                Motion::Down => Motion::Up,
                _ => continue,
            };
            let (t, hw) = (x.clip.frames, x.clip.height * x.clip.width);
            let mut rev = x.clip.clone();
            for c in 0..3 {
                for f in 0..t {
                    let src = &x.clip.data[(c * t + (t - 1 - f)) * hw..(c * t + (t - f)) * hw];
                    rev.data[(c * t + f) * hw..(c * t + f + 1) * hw].copy_from_slice(src);
                }
            }
            assert_eq!(read(&rev).motion, Some(opposite));
            checked += 1;
        }
        assert!(checked > 30);
    }
}
