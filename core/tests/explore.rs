//! Exploring the latent space between seeds and prompts (`generate::LatentPoint`): slerp keeps
//! the noise's scale, a corner gives that corner's clip, points between give clips between, and
//! the same point always gives the same clip.

use burn::prelude::Device;
use flick_core::generate::{Generator, LatentPoint, slerp};
use flick_core::video::Video;

fn bundled_generator() -> Generator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/generator-small.safetensors"
    );
    Generator::load(std::path::Path::new(path), &Device::flex()).expect("the bundled generator")
}

/// Mean and largest absolute difference per RGB channel, in 0–255 levels.
fn diff(a: &Video, b: &Video) -> (f64, u8) {
    assert_eq!(a.rgba.len(), b.rgba.len());
    let (mut sum, mut max, mut n) = (0u64, 0u8, 0u64);
    for (i, (x, y)) in a.rgba.iter().zip(&b.rgba).enumerate() {
        if i % 4 == 3 {
            continue;
        }
        let d = x.abs_diff(*y);
        sum += d as u64;
        max = max.max(d);
        n += 1;
    }
    (sum as f64 / n as f64, max)
}

#[test]
fn slerp_keeps_the_noise_at_unit_scale_and_hits_both_ends() {
    let g = bundled_generator();
    let (a, b) = (g.noise(1), g.noise(2));
    let norm =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert_eq!(slerp(&a, &b, 0.0), a);
    assert_eq!(slerp(&a, &b, 1.0), b);
    for s in [0.1, 0.3, 0.5, 0.7, 0.9] {
        let r = norm(&slerp(&a, &b, s));
        assert!((r - 1.0).abs() < 0.03, "RMS {r} at s = {s}");
    }
    // A straight average of two independent noises shrinks them (≈ 0.71 at the middle).
    let mid: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * (x + y)).collect();
    assert!(norm(&mid) < 0.75);
    // Parallel vectors: a straight line, no division by sin 0.
    let twice: Vec<f32> = a.iter().map(|x| 2.0 * x).collect();
    let half = slerp(&a, &twice, 0.5);
    assert!(half.iter().zip(&a).all(|(h, x)| (h - 1.5 * x).abs() < 1e-4));
}

#[test]
fn bad_points_are_refused() {
    let g = bundled_generator();
    let corner = |s| ("a red circle".to_string(), s);
    for (corners, at) in [
        (vec![corner(1)], [0.5, 0.0]),
        (vec![corner(1), corner(2), corner(3)], [0.5, 0.0]),
        (vec![corner(1), corner(2)], [1.5, 0.0]),
        (vec![corner(1), corner(2)], [f32::NAN, 0.0]),
        (
            vec![corner(1), corner(2), corner(3), corner(4)],
            [0.5, -0.1],
        ),
    ] {
        let point = LatentPoint { corners, at };
        let err = g.explore(&point, 1, 1.0).expect_err("refused").to_string();
        assert!(err.contains("latent point"), "{err}");
    }
}

#[test]
fn corners_give_their_clips_and_points_between_give_clips_between() {
    let g = bundled_generator();
    let a = ("a large red circle moving left on black".to_string(), 11);
    let b = (
        "a small cyan square moving up on dark green".to_string(),
        12,
    );
    let d = g.defaults();
    let line = |s: f32| LatentPoint {
        corners: vec![a.clone(), b.clone()],
        at: [s, 0.0],
    };
    let direct = g
        .generate_videos(
            &[a.0.clone(), b.0.clone()],
            &[a.1, b.1],
            d.steps,
            d.guidance,
            |_, _| {},
        )
        .unwrap();
    let path: Vec<Video> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|&s| g.explore(&line(s), d.steps, d.guidance).unwrap())
        .collect();
    // The ends are the corners' own clips (the prompts are encoded in one batch here: equal up
    // to the last bit of the CPU's reductions).
    for (end, want) in [(&path[0], &direct[0]), (&path[4], &direct[1])] {
        let (mean, max) = diff(end, want);
        assert!(
            mean < 0.05 && max <= 2,
            "an end differs from its corner: mean {mean}, max {max}"
        );
    }
    // Every step along the line changes the clip, and the middle is neither end.
    for w in path.windows(2) {
        let (mean, _) = diff(&w[0], &w[1]);
        assert!(
            mean > 1.0,
            "consecutive points gave nearly the same clip ({mean})"
        );
    }
    assert!(diff(&path[2], &path[0]).0 > 3.0 && diff(&path[2], &path[4]).0 > 3.0);
    // The same point twice: the same clip.
    assert_eq!(
        g.explore(&line(0.5), d.steps, d.guidance).unwrap().rgba,
        path[2].rgba
    );

    // Four seeds of one prompt on a square: each corner is its seed's clip.
    let seeds = [21u64, 22, 23, 24];
    let pad = |u: f32, v: f32| LatentPoint {
        corners: seeds.iter().map(|&s| (a.0.clone(), s)).collect(),
        at: [u, v],
    };
    let direct = g
        .generate_videos(
            &vec![a.0.clone(); 4],
            &seeds,
            d.steps,
            d.guidance,
            |_, _| {},
        )
        .unwrap();
    for (k, (u, v)) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        let (mean, max) = diff(
            &g.explore(&pad(u, v), d.steps, d.guidance).unwrap(),
            &direct[k],
        );
        assert!(
            mean < 0.05 && max <= 2,
            "corner {k}: mean {mean}, max {max}"
        );
    }
    let centre = g.explore(&pad(0.5, 0.5), d.steps, d.guidance).unwrap();
    assert!(direct.iter().all(|c| diff(&centre, c).0 > 1.0));
}
