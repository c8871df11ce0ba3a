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
        'A' => 0b010_101_111_101_101,
        'B' => 0b110_101_110_101_110,
        'C' => 0b011_100_100_100_011,
        'D' => 0b110_101_101_101_110,
        'E' => 0b111_100_110_100_111,
        'F' => 0b111_100_110_100_100,
        'G' => 0b011_100_101_101_011,
        'H' => 0b101_101_111_101_101,
        'I' => 0b111_010_010_010_111,
        'J' => 0b001_001_001_101_010,
        'K' => 0b101_101_110_101_101,
        'L' => 0b100_100_100_100_111,
        'M' => 0b101_111_111_101_101,
        'N' => 0b110_101_101_101_101,
        'O' => 0b010_101_101_101_010,
        'P' => 0b110_101_110_100_100,
        'Q' => 0b010_101_101_110_011,
        'R' => 0b110_101_110_101_101,
        'S' => 0b011_100_010_001_110,
        'T' => 0b111_010_010_010_010,
        'U' => 0b101_101_101_101_111,
        'V' => 0b101_101_101_101_010,
        'W' => 0b101_101_111_111_101,
        'X' => 0b101_101_010_101_101,
        'Y' => 0b101_101_010_010_010,
        'Z' => 0b111_001_010_100_111,
        '%' => 0b101_001_010_100_101,
        '@' => 0b010_101_111_100_011,
        '=' => 0b000_111_000_111_000,
        '/' => 0b001_001_010_100_100,
        '_' => 0b000_000_000_000_111,
        ':' => 0b000_010_000_010_000,
        '(' => 0b001_010_010_010_001,
        ')' => 0b100_010_010_010_100,
        c if c.is_ascii_lowercase() => return glyph(c.to_ascii_uppercase()),
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

fn line(
    img: &mut RgbaImage,
    (x0, y0): (f32, f32),
    (x1, y1): (f32, f32),
    color: Rgba<u8>,
    thick: bool,
) {
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
    let pts: Vec<(u64, f32)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .collect();
    let mut img = RgbaImage::from_pixel(W, H, Rgba([255, 255, 255, 255]));
    if pts.len() >= 2 {
        let (xmin, xmax) = (
            pts[0].0 as f32,
            pts[pts.len() - 1].0.max(pts[0].0 + 1) as f32,
        );
        let lmin = pts
            .iter()
            .map(|p| p.1.log10())
            .fold(f32::INFINITY, f32::min)
            .floor();
        let lmax = pts
            .iter()
            .map(|p| p.1.log10())
            .fold(f32::NEG_INFINITY, f32::max)
            .ceil()
            .max(lmin + 1.0);
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
                    text(
                        &mut img,
                        4,
                        (y - 5.0).max(0.0) as u32,
                        &format_value(v),
                        dark,
                    );
                }
            }
            d += 1.0;
        }
        for i in 0..=4 {
            let s = xmin + (xmax - xmin) * i as f32 / 4.0;
            let x = px(s);
            line(&mut img, (x, 10.0), (x, (H - B) as f32), grey, false);
            text(
                &mut img,
                (x as u32).saturating_sub(10),
                H - B + 8,
                &format_step(s as u64),
                dark,
            );
        }
        let raw = Rgba([150, 180, 230, 255]);
        for w in pts.windows(2) {
            line(
                &mut img,
                (px(w[0].0 as f32), py(w[0].1)),
                (px(w[1].0 as f32), py(w[1].1)),
                raw,
                false,
            );
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
        line(
            &mut img,
            (L as f32, (H - B) as f32),
            ((W - 10) as f32, (H - B) as f32),
            dark,
            false,
        );
        line(
            &mut img,
            (L as f32, 10.0),
            (L as f32, (H - B) as f32),
            dark,
            false,
        );
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
    if s >= 10_000 {
        format!("{}k", s / 1000)
    } else {
        s.to_string()
    }
}

/// Grouped bar chart of values in [0, 1]: one group per metric, one bar per series, with a
/// colour legend naming the series.
pub fn bar_chart(
    path: &std::path::Path,
    metrics: &[&str],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    const PALETTE: [[u8; 3]; 8] = [
        [90, 90, 90],
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
    ];
    let (w, h) = (960u32, 460u32);
    let legend_h = 14 * series.len() as u32 + 10;
    let (top, bottom, left) = (legend_h + 10, 40u32, 50u32);
    let mut img = RgbaImage::from_pixel(w, h + legend_h, Rgba([255, 255, 255, 255]));
    let dark = Rgba([40, 40, 40, 255]);
    let grey = Rgba([210, 210, 210, 255]);
    let plot_h = (h + legend_h - top - bottom) as f32;
    let y_of = |v: f64| top as f32 + (1.0 - v.clamp(0.0, 1.0) as f32) * plot_h;
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let y = y_of(v);
        line(
            &mut img,
            (left as f32, y),
            ((w - 10) as f32, y),
            grey,
            false,
        );
        text(
            &mut img,
            4,
            (y - 5.0).max(0.0) as u32,
            &format!("{}%", (v * 100.0) as u32),
            dark,
        );
    }
    for (i, (name, _)) in series.iter().enumerate() {
        let [r, g, b] = PALETTE[i % PALETTE.len()];
        let y = 6 + 14 * i as u32;
        for dy in 0..10 {
            for dx in 0..18 {
                img.put_pixel(left + dx, y + dy, Rgba([r, g, b, 255]));
            }
        }
        text(&mut img, left + 26, y, &name.to_uppercase(), dark);
    }
    let group_w = (w - left - 10) as f32 / metrics.len().max(1) as f32;
    let bar_w = (group_w * 0.8 / series.len().max(1) as f32).max(1.0);
    for (m, metric) in metrics.iter().enumerate() {
        let x0 = left as f32 + m as f32 * group_w + group_w * 0.1;
        for (i, (_, values)) in series.iter().enumerate() {
            let Some(&v) = values.get(m) else { continue };
            if !v.is_finite() {
                continue;
            }
            let [r, g, b] = PALETTE[i % PALETTE.len()];
            let (xa, xb) = (x0 + i as f32 * bar_w, x0 + (i + 1) as f32 * bar_w - 1.0);
            let (ya, yb) = (y_of(v), y_of(0.0));
            for x in xa.round() as u32..xb.round().max(xa.round() + 1.0) as u32 {
                for y in ya.round() as u32..yb.round() as u32 {
                    if x < img.width() && y < img.height() {
                        img.put_pixel(x, y, Rgba([r, g, b, 255]));
                    }
                }
            }
        }
        text(
            &mut img,
            x0 as u32,
            h + legend_h - bottom + 10,
            &metric.to_uppercase(),
            dark,
        );
    }
    line(
        &mut img,
        (left as f32, y_of(0.0)),
        ((w - 10) as f32, y_of(0.0)),
        dark,
        false,
    );
    img.save(path)?;
    Ok(())
}
