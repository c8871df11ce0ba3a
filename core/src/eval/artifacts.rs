//! Pixel statistics of artifacts the attribute probe does not see: **outline flicker** (an
//! object's outline redrawn differently in every frame) and the **patch grid** (a pattern
//! repeated in every patch of a transformer's output). `flick eval` reports both relative to real clips (1 = as
//! real clips).

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

/// Power spectrum `|DFT₂(x − mean x)|²` of one `h × w` image, laid out `[ky][kx]`.
fn power_spectrum(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    use std::f64::consts::TAU;
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    // Rows first: for each row y and frequency kx, Σ_x x[y][x]·e^(−2πi·kx·x/w).
    let mut rows = vec![(0f64, 0f64); h * w];
    for y in 0..h {
        for kx in 0..w {
            let (mut re, mut im) = (0.0, 0.0);
            for xx in 0..w {
                let a = TAU * (kx * xx % w) as f64 / w as f64;
                let v = x[y * w + xx] - mean;
                re += v * a.cos();
                im -= v * a.sin();
            }
            rows[y * w + kx] = (re, im);
        }
    }
    let mut power = vec![0f64; h * w];
    for ky in 0..h {
        for kx in 0..w {
            let (mut re, mut im) = (0.0, 0.0);
            for y in 0..h {
                let a = TAU * (ky * y % h) as f64 / h as f64;
                let (c, s) = (a.cos(), a.sin());
                let (r, i) = rows[y * w + kx];
                re += r * c + i * s;
                im += i * c - r * s;
            }
            power[ky * w + kx] = re * re + im * im;
        }
    }
    power
}

/// Spectral peaks at a `period`-pixel grid: a pattern repeated in every `period × period` patch
/// (what a DiT's per-patch linear head leaves: the same edges drawn in every patch) puts its
/// energy at the spatial frequencies that are multiples of `1/period` in both axes; objects and
/// noise have smooth spectra there. The score is the power at those frequencies (DC left out),
/// summed over frames and RGB channels, over the mean power of each one's four neighbouring
/// frequencies: ≈ 1 without a grid, higher with one. Measured against a step-based measure on
/// the bundled models (2026-12-02): only the spectral peaks separated the APT generator's
/// visible grid (3.1 on its 24 first held-out clips) from real clips and the teacher (1.1 each).
/// `None` when the period does not divide the frame or the clip has no spatial variation.
pub fn patch_grid(clip: &Clip, period: usize) -> Option<f64> {
    let (h, w) = (clip.height, clip.width);
    if period < 2 || h % period != 0 || w % period != 0 || h < 2 * period || w < 2 * period {
        return None;
    }
    let mut power = vec![0f64; h * w];
    let mut frame = vec![0f64; h * w];
    for c in 0..3 {
        for t in 0..clip.frames {
            for y in 0..h {
                for x in 0..w {
                    frame[y * w + x] = clip.at(c, t, y, x) as f64;
                }
            }
            for (p, q) in power.iter_mut().zip(power_spectrum(&frame, h, w)) {
                *p += q;
            }
        }
    }
    let at = |ky: usize, kx: usize| power[(ky % h) * w + kx % w];
    let (mut peaks, mut around) = (0f64, 0f64);
    for ky in (0..h).step_by(h / period) {
        for kx in (0..w).step_by(w / period) {
            if kx == 0 && ky == 0 {
                continue;
            }
            peaks += at(ky, kx);
            around +=
                (at(ky, kx + 1) + at(ky, kx + w - 1) + at(ky + 1, kx) + at(ky + h - 1, kx)) / 4.0;
        }
    }
    (around > 1e-12).then(|| peaks / around)
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

    /// A deterministic pseudo-random value in [−1, 1) for index `i` (no RNG crate in tests).
    fn hash(i: usize) -> f32 {
        let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 31;
        z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 29;
        (z % 2000) as f32 / 1000.0 - 1.0
    }

    #[test]
    fn patch_grid_sees_a_repeated_patch_pattern_and_not_objects_or_noise() {
        let (f, h, w) = (4, 16, 16);
        let noise = |c: &Clip| {
            let mut c = c.clone();
            for (i, v) in c.data.iter_mut().enumerate() {
                *v += 0.1 * hash(i);
            }
            c
        };
        // The same faint pattern drawn in every 4×4 patch (a per-patch head's signature), with
        // amplitude `amp` (the noise: 0.1).
        let pattern = |c: &Clip, amp: f32| {
            let mut c = c.clone();
            for ch in 0..3 {
                for t in 0..f {
                    for y in 0..h {
                        for x in 0..w {
                            let i = ((ch * f + t) * h + y) * w + x;
                            c.data[i] += amp * hash(10 * (y % 4) + x % 4 + ch);
                        }
                    }
                }
            }
            c
        };
        // Pixel noise alone: a flat spectrum, no peaks.
        let empty = clip(f, |_| 0, 0, 0);
        let n = patch_grid(&noise(&empty), 4).unwrap();
        assert!((0.75..1.33).contains(&n), "uniform noise scores {n}");
        let g = patch_grid(&pattern(&noise(&empty), 0.05), 4).unwrap();
        assert!(g > 3.0, "a repeated patch pattern in noise scores only {g}");
        // A bright moving square (whose own spectrum may peak anywhere — hence `flick eval` reports
        // the score relative to real clips): a visible pattern (a tenth of its contrast) stands out.
        let square = noise(&clip(f, |_| 6, 3, 1));
        let (plain, gridded) = (
            patch_grid(&square, 4).unwrap(),
            patch_grid(&pattern(&square, 0.2), 4).unwrap(),
        );
        assert!(
            gridded > 1.5 * plain,
            "pattern {gridded}, plain square {plain}"
        );
        // A period that does not divide the frame is not measured; a flat clip has no spectrum.
        assert_eq!(patch_grid(&square, 3), None);
        assert_eq!(patch_grid(&empty, 4), None);
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
