//! The 8-bit copy of a checkpoint (`flick convert --q8`): about a third of the f32 bytes, every
//! weight within half a quantisation step, and the bundled one-step generator's clips close to
//! the f32 model's on average — but not within 4/255 everywhere (a few values move by up to
//! ≈ 20/255), which is why the web page downloads the f16 copy (at most 1/255 here).

use burn::prelude::Device;
use flick_core::checkpoint::{
    Q8_BLOCK, convert_to_f16, convert_to_q8, read_safetensors, read_safetensors_bytes,
};
use flick_core::generate::Generator;

fn bundled(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
        .join(format!("{name}.safetensors"))
}

#[test]
fn an_8bit_copy_of_the_generator_is_a_third_of_the_bytes_and_close_on_average() {
    let dir = tempfile::tempdir().unwrap();
    let (q8, f16) = (
        dir.path().join("g8.safetensors"),
        dir.path().join("g16.safetensors"),
    );
    let change = convert_to_q8(&bundled("generator-small"), &q8).unwrap();
    convert_to_f16(&bundled("generator-small"), &f16).unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let (a, b, c) = (size(&bundled("generator-small")), size(&f16), size(&q8));
    eprintln!(
        "generator-small: f32 {a} bytes, f16 {b}, 8-bit {c}; largest weight change {change:.2e}"
    );
    assert!(c * 10 < a * 4, "8-bit copy {c} bytes vs f32 {a}");
    // Every weight within half a step of its block's scale.
    let (full, _) = read_safetensors(&bundled("generator-small")).unwrap();
    let (back, meta) = read_safetensors(&q8).unwrap();
    assert_eq!(meta["stored_dtype"], "q8");
    assert_eq!(
        full.keys().collect::<Vec<_>>(),
        back.keys().collect::<Vec<_>>()
    );
    for (name, (shape, w)) in &full {
        assert_eq!(&back[name].0, shape);
        for (block, got) in w.chunks(Q8_BLOCK).zip(back[name].1.chunks(Q8_BLOCK)) {
            let max = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in block.iter().zip(got) {
                assert!(
                    (x - y).abs() <= max / 127.0 * 0.51 + 1e-6 + x.abs() * 1e-3,
                    "{name}: {x} → {y}"
                );
            }
        }
    }
    let device = Device::flex();
    let g32 = Generator::load(&bundled("generator-small"), &device).unwrap();
    let g8 = Generator::load(&q8, &device).unwrap();
    let prompts: Vec<String> = [
        "a large red circle moving left on black",
        "a small yellow square moving up on navy",
        "a large cyan triangle orbiting clockwise on gray",
        "a large white cross falling on dark green",
    ]
    .iter()
    .flat_map(|p| [p.to_string(), p.to_string()])
    .collect();
    let seeds: Vec<u64> = (0..prompts.len() as u64).map(|i| 100 + i).collect();
    let d = g32.defaults();
    let x = g32
        .generate_videos(&prompts, &seeds, 1, d.guidance, |_, _| {})
        .unwrap();
    let y = g8
        .generate_videos(&prompts, &seeds, 1, d.guidance, |_, _| {})
        .unwrap();
    let h = Generator::load(&f16, &device)
        .unwrap()
        .generate_videos(&prompts, &seeds, 1, d.guidance, |_, _| {})
        .unwrap();
    let compare = |y: &[flick_core::video::Video]| {
        let (mut max, mut sum, mut n, mut over) = (0u8, 0u64, 0u64, 0u64);
        for (u, v) in x.iter().zip(y) {
            for (i, (p, q)) in u.rgba.iter().zip(&v.rgba).enumerate() {
                if i % 4 != 3 {
                    max = max.max(p.abs_diff(*q));
                    sum += p.abs_diff(*q) as u64;
                    over += (p.abs_diff(*q) > 4) as u64;
                    n += 1;
                }
            }
        }
        (max, sum as f64 / n as f64, 100.0 * over as f64 / n as f64)
    };
    let (hmax, hmean, hover) = compare(&h);
    let (max, mean, over) = compare(&y);
    eprintln!(
        "8 clips vs f32: f16 largest {hmax}/255, mean {hmean:.3}/255, {hover:.4}% over 4/255; 8-bit largest {max}/255, mean {mean:.3}/255, {over:.4}% over 4/255"
    );
    assert!(
        hmax <= 2,
        "the f16 copy moved a channel value by {hmax}/255"
    );
    assert!(
        mean < 0.25 && over < 0.5,
        "8-bit: mean difference {mean:.3}/255, {over:.3}% of values by more than 4/255"
    );
}

#[test]
fn a_broken_8bit_file_is_refused() {
    use safetensors::{Dtype, tensor::TensorView};
    let q = vec![1u8; 64];
    let scales = vec![0u8; 2 * 3]; // 3 scales for 64 values: 2 expected
    let ok_scales = vec![0u8; 2 * 2];
    // (name, dtype, shape, bytes) of each tensor of a file, and the message expected.
    type Tensor<'a> = (&'a str, Dtype, Vec<usize>, &'a [u8]);
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (
            vec![
                ("w.q8", Dtype::I8, vec![64], &q),
                ("w.q8_scale", Dtype::F16, vec![3], &scales),
            ],
            "3 scales for 64 values",
        ),
        (vec![("w.q8", Dtype::I8, vec![64], &q)], "has no w.q8_scale"),
        (vec![("w", Dtype::I8, vec![64], &q)], "not named NAME.q8"),
        (
            vec![
                ("w.q8", Dtype::I8, vec![64], &q),
                ("w.q8_scale", Dtype::F16, vec![2], &ok_scales),
                ("w", Dtype::F16, vec![2], &ok_scales[..4]),
            ],
            "stored twice",
        ),
    ];
    for (tensors, want) in cases {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, &Some(std::collections::HashMap::new())).unwrap();
        let err = read_safetensors_bytes(&bytes).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
}
