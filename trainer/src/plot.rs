//! Loss curves as PNG, drawn directly (no font or plotting dependency): light raw values, a
//! bold moving average, log-scale y with labelled decades, x labelled in steps.

use image::{Rgba, RgbaImage};

const W: u32 = 720;
const H: u32 = 400;
const L: u32 = 60; // left margin (labels)
const B: u32 = 30; // bottom margin

/// 3×5 digits (and '.', 'e', '-') for axis labels, one u16 per glyph, row-major bits.
fn glyph(c: char) -> Option<u16> {
    Some(match c {
        '0' => 0b111_101_101_101_111,
        '1' => 0b010_110_010_010_111,
        '2' => 0b111_001_111_100_111,
        '3' => 0b111_001_111_001_111,
        '4' => 0b101_101_111_001_001,
        '5' => 0b111_100_111_001_111,
        '6' => 0b111_100_111_101_111,
        '7' => 0b111_001_010_010_010,
        '8' => 0b111_101_111_101_111,
        '9' => 0b111_101_111_001_111,
        '.' => 0b000_000_000_000_010,
        '-' => 0b000_000_111_000_000,
        'e' => 0b000_111_101_110_011,
        'k' => 0b100_101_110_101_101,
        _ => return None,
    })
}

fn text(img: &mut RgbaImage, x: u32, y: u32, s: &str, color: Rgba<u8>) {
    let scale = 2;
    for (i, c) in s.chars().enumerate() {
        if let Some(g) = glyph(c) {
            for r in 0..5 {
                for col in 0..3 {
                    if g >> (14 - (r * 3 + col)) & 1 == 1 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                let px = x + (i as u32 * 4 + col) * scale + dx;
                                let py = y + r * scale + dy;
                                if px < img.width() && py < img.height() {
                                    img.put_pixel(px, py, color);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbaImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), color: Rgba<u8>, thick: bool) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let u = i as f32 / n as f32;
        let (x, y) = (x0 + (x1 - x0) * u, y0 + (y1 - y0) * u);
        let r = if thick { 1 } else { 0 };
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, color);
                }
            }
        }
    }
}

/// Plot `(step, value)` points (positive values) to `path`.
pub fn plot_curve(path: &std::path::Path, points: &[(u64, f32)]) -> anyhow::Result<()> {
    let pts: Vec<(u64, f32)> = points.iter().copied().filter(|(_, v)| v.is_finite() && *v > 0.0).collect();
    let mut img = RgbaImage::from_pixel(W, H, Rgba([255, 255, 255, 255]));
    if pts.len() >= 2 {
        let (xmin, xmax) = (pts[0].0 as f32, pts[pts.len() - 1].0.max(pts[0].0 + 1) as f32);
        let lmin = pts.iter().map(|p| p.1.log10()).fold(f32::INFINITY, f32::min).floor();
        let lmax = pts.iter().map(|p| p.1.log10()).fold(f32::NEG_INFINITY, f32::max).ceil().max(lmin + 1.0);
        let px = |s: f32| L as f32 + (s - xmin) / (xmax - xmin) * (W - L - 10) as f32;
        let py = |v: f32| 10.0 + (lmax - v.log10()) / (lmax - lmin) * (H - B - 10) as f32;
        let grey = Rgba([200, 200, 200, 255]);
        let dark = Rgba([40, 40, 40, 255]);
        // y grid at 1, 2, 5 × each decade
        let mut d = lmin;
        while d <= lmax {
            for m in [1.0f32, 2.0, 5.0] {
                let v = 10f32.powf(d) * m;
                if v.log10() <= lmax + 1e-6 {
                    let y = py(v);
                    line(&mut img, (L as f32, y), ((W - 10) as f32, y), grey, false);
                    text(&mut img, 4, (y - 5.0).max(0.0) as u32, &format_value(v), dark);
                }
            }
            d += 1.0;
        }
        for i in 0..=4 {
            let s = xmin + (xmax - xmin) * i as f32 / 4.0;
            let x = px(s);
            line(&mut img, (x, 10.0), (x, (H - B) as f32), grey, false);
            text(&mut img, (x as u32).saturating_sub(10), H - B + 8, &format_step(s as u64), dark);
        }
        let raw = Rgba([150, 180, 230, 255]);
        for w in pts.windows(2) {
            line(&mut img, (px(w[0].0 as f32), py(w[0].1)), (px(w[1].0 as f32), py(w[1].1)), raw, false);
        }
        let k = (pts.len() / 30).max(1);
        let smooth: Vec<(f32, f32)> = (0..pts.len())
            .map(|i| {
                let lo = i.saturating_sub(k);
                let hi = (i + k + 1).min(pts.len());
                let mean = pts[lo..hi].iter().map(|p| p.1).sum::<f32>() / (hi - lo) as f32;
                (px(pts[i].0 as f32), py(mean))
            })
            .collect();
        for w in smooth.windows(2) {
            line(&mut img, w[0], w[1], Rgba([20, 60, 160, 255]), true);
        }
        line(&mut img, (L as f32, (H - B) as f32), ((W - 10) as f32, (H - B) as f32), dark, false);
        line(&mut img, (L as f32, 10.0), (L as f32, (H - B) as f32), dark, false);
    }
    img.save(path)?;
    Ok(())
}

fn format_value(v: f32) -> String {
    if (0.01..1000.0).contains(&v) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

fn format_step(s: u64) -> String {
    if s >= 10_000 { format!("{}k", s / 1000) } else { s.to_string() }
}
