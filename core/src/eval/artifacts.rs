//! Pixel statistics of two artifacts the attribute probe does not see: a **patch grid** (a
//! patch-token model's linear head drawing every patch's edges on its own leaves a pattern with
//! the patch period) and **outline flicker** (an object's outline redrawn differently in every
//! frame). `flick eval` reports both relative to real clips (1 = as real clips).

use crate::data::Clip;

/// Energy of a clip's edge statistics at the period `period` (pixels): for every boundary
/// between neighbouring pixels, the squared difference across it, averaged per boundary phase
/// (column boundary `x → x+1` has phase `x mod period`, rows likewise, over channels and
/// frames); returns the energy of that `period`-long profile at its non-zero frequencies over
/// the energy at frequency 0 — `Σ_k (g_k − ḡ)² / (period · ḡ²)`. Content placed anywhere
/// gives a flat profile (≈ 0); edges that fall on a grid of that period give a peaked one.
pub fn patch_grid_energy(clip: &Clip, period: usize) -> f64 {
    assert!(period >= 2, "a grid period is at least 2 pixels");
    let mut sums = vec![0f64; period];
    let mut counts = vec![0f64; period];
    for c in 0..3 {
        for t in 0..clip.frames {
            for y in 0..clip.height {
                for x in 0..clip.width {
                    let v = clip.at(c, t, y, x) as f64;
                    if x + 1 < clip.width {
                        sums[x % period] += (clip.at(c, t, y, x + 1) as f64 - v).powi(2);
                        counts[x % period] += 1.0;
                    }
                    if y + 1 < clip.height {
                        sums[y % period] += (clip.at(c, t, y + 1, x) as f64 - v).powi(2);
                        counts[y % period] += 1.0;
                    }
                }
            }
        }
    }
    let g: Vec<f64> = sums.iter().zip(&counts).map(|(s, n)| s / n.max(1.0)).collect();
    let mean = g.iter().sum::<f64>() / period as f64;
    if mean <= 1e-12 {
        return 0.0;
    }
    g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (period as f64 * mean * mean)
}

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
                    let d: f32 = (0..3).map(|c| ((clip.at(c, t, y, x) + 1.0) / 2.0 - bg[c]).abs()).sum();
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
        let at = |m: &Vec<bool>, x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h && m[(y * w + x) as usize];
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
    /// `(x0 + v·f, 2 + v·f)` in frame `f`; `grid` adds 0.5 stripes on every 4th row and column.
    fn clip(frames: usize, side: impl Fn(usize) -> usize, x0: usize, vx: usize, grid: bool) -> Clip {
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
                        if grid && (x % 4 == 3 || y % 4 == 3) {
                            data[i] += 0.5;
                        }
                    }
                }
            }
        }
        Clip { data, frames, height: h, width: w }
    }

    #[test]
    fn a_grid_with_the_patch_period_scores_high() {
        // A square moving one pixel a frame for 8 frames puts its edges at every phase equally.
        let plain = patch_grid_energy(&clip(8, |_| 5, 1, 1, false), 4);
        let gridded = patch_grid_energy(&clip(8, |_| 5, 1, 1, true), 4);
        assert!(plain < 0.05, "evenly placed edges score {plain}");
        assert!(gridded > 5.0 * plain, "a 4-pixel grid scores only {gridded} (plain {plain})");
        // A flat clip has no edges at all.
        let flat = Clip { data: vec![0.2; 3 * 2 * 8 * 8], frames: 2, height: 8, width: 8 };
        assert_eq!(patch_grid_energy(&flat, 4), 0.0);
    }

    #[test]
    fn outline_flicker_ignores_motion_and_sees_redrawn_outlines() {
        let still = outline_flicker(&clip(6, |_| 5, 4, 0, false)).unwrap();
        let moving = outline_flicker(&clip(5, |_| 5, 1, 2, false)).unwrap();
        let pulsing = outline_flicker(&clip(6, |f| if f % 2 == 0 { 4 } else { 6 }, 4, 0, false)).unwrap();
        assert_eq!(still, 0.0);
        assert!(moving < 1e-9, "a translating square flickers by {moving}");
        assert!(pulsing > 0.3, "a square redrawn every frame flickers only {pulsing}");
        // No object, or one frame: undefined.
        let empty = Clip { data: vec![-0.8; 3 * 3 * 8 * 8], frames: 3, height: 8, width: 8 };
        assert_eq!(outline_flicker(&empty), None);
        assert_eq!(mean_score(&[empty], outline_flicker), None);
    }
}
