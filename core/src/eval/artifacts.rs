//! Pixel statistics of an artifact the attribute probe does not see: **outline flicker** (an
//! object's outline redrawn differently in every frame). `flick eval` reports it relative to
//! real clips (1 = as real clips).

use crate::data::Clip;

/// Foreground mask of every frame: pixels whose RGB (in [0, 1]) differs from the clip's
/// background — the per-channel median over the clip — by more than 0.45 in L1 (the threshold
/// of [`super::analytic`]).
fn foreground(clip: &Clip) -> Vec<Vec<bool>> {
    let n = clip.frames * clip.height * clip.width;
    let bg: Vec<f32> = (0..3)
        .map(|c| {
            let mut v: Vec<f32> = clip.data[c * n..(c + 1) * n].to_vec();
            v.sort_by(f32::total_cmp);
            (v[n / 2] + 1.0) / 2.0
        })
        .collect();
    (0..clip.frames)
        .map(|t| {
            let mut m = Vec::with_capacity(clip.height * clip.width);
            for y in 0..clip.height {
                for x in 0..clip.width {
                    let d: f32 = (0..3)
                        .map(|c| ((clip.at(c, t, y, x) + 1.0) / 2.0 - bg[c]).abs())
                        .sum();
                    m.push(d > 0.45);
                }
            }
            m
        })
        .collect()
}

/// How much the object's outline changes from frame to frame once its motion is removed: for
/// each pair of consecutive frames, the foreground of the second is shifted so its centroid
/// lands on the first's (whole pixels), and the pixels where the two masks differ are counted;
/// the sum over pairs divided by the mean foreground size times the number of pairs. An object
/// that keeps its shape scores ≈ 0 (still or translating); one redrawn each frame scores high.
/// `None` when a frame has no foreground or the clip has one frame.
pub fn outline_flicker(clip: &Clip) -> Option<f64> {
    if clip.frames < 2 {
        return None;
    }
    let (h, w) = (clip.height as i64, clip.width as i64);
    let masks = foreground(clip);
    let mut centroids = Vec::with_capacity(masks.len());
    let mut area = 0f64;
    for m in &masks {
        let (mut sx, mut sy, mut n) = (0f64, 0f64, 0f64);
        for (i, &on) in m.iter().enumerate() {
            if on {
                sx += (i as i64 % w) as f64;
                sy += (i as i64 / w) as f64;
                n += 1.0;
            }
        }
        if n == 0.0 {
            return None;
        }
        centroids.push((sx / n, sy / n));
        area += n;
    }
    let area = area / masks.len() as f64;
    let mut changed = 0f64;
    for f in 1..masks.len() {
        let dx = (centroids[f].0 - centroids[f - 1].0).round() as i64;
        let dy = (centroids[f].1 - centroids[f - 1].1).round() as i64;
        let at = |m: &Vec<bool>, x: i64, y: i64| {
            x >= 0 && y >= 0 && x < w && y < h && m[(y * w + x) as usize]
        };
        for y in 0..h {
            for x in 0..w {
                if at(&masks[f - 1], x, y) != at(&masks[f], x + dx, y + dy) {
                    changed += 1.0;
                }
            }
        }
    }
    Some(changed / (area * (masks.len() - 1) as f64))
}

/// Mean of `score` over the clips where it is defined (`None` if nowhere).
pub fn mean_score(clips: &[Clip], score: impl Fn(&Clip) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = clips.iter().filter_map(score).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `t × 16 × 16` clip on a dark background with a bright square of side `side` at
    /// `(x0 + v·f, 2 + v·f)` in frame `f`.
    fn clip(frames: usize, side: impl Fn(usize) -> usize, x0: usize, vx: usize) -> Clip {
        let (h, w) = (16, 16);
        let mut data = vec![-0.8f32; 3 * frames * h * w];
        for c in 0..3 {
            for f in 0..frames {
                for y in 0..h {
                    for x in 0..w {
                        let i = ((c * frames + f) * h + y) * w + x;
                        let s = side(f);
                        let (ox, oy) = (x0 + vx * f, 2 + vx * f);
                        if x >= ox && x < ox + s && y >= oy && y < oy + s {
                            data[i] = 0.9;
                        }
                    }
                }
            }
        }
        Clip {
            data,
            frames,
            height: h,
            width: w,
        }
    }

    #[test]
    fn outline_flicker_ignores_motion_and_sees_redrawn_outlines() {
        let still = outline_flicker(&clip(6, |_| 5, 4, 0)).unwrap();
        let moving = outline_flicker(&clip(5, |_| 5, 1, 2)).unwrap();
        let pulsing = outline_flicker(&clip(6, |f| if f % 2 == 0 { 4 } else { 6 }, 4, 0)).unwrap();
        assert_eq!(still, 0.0);
        assert!(moving < 1e-9, "a translating square flickers by {moving}");
        assert!(
            pulsing > 0.3,
            "a square redrawn every frame flickers only {pulsing}"
        );
        // No object, or one frame: undefined.
        let empty = Clip {
            data: vec![-0.8; 3 * 3 * 8 * 8],
            frames: 3,
            height: 8,
            width: 8,
        };
        assert_eq!(outline_flicker(&empty), None);
        assert_eq!(mean_score(&[empty], outline_flicker), None);
    }
}
