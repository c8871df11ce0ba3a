//! Hostile inputs, by class and in numbers: every input gives a result or a clear error — never a
//! panic, an abort or memory driven by a number read from the input. Each test prints its
//! counts (`cargo test --test hostile -- --nocapture`).
//!
//! - 10,000 generated prompts (empty, 1 MB, control characters, every Unicode plane,
//!   right-to-left marks, …) tokenized and encoded, a clip made from every 20th; prompts given as
//!   bytes (invalid UTF-8 included) through `text::prompt_from_bytes`.
//! - 1,000+ corrupted checkpoints: truncated at every structural boundary, random bytes, valid
//!   headers with absurd shapes, offsets or dtypes, configs with negative or huge sizes.
//! - A dataset folder of corrupt GIFs, PNG frames and captions: skipped and counted.
//! - Configs with wrong types, negative sizes or unknown keys: an error naming the key and file.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::prelude::*;
use flick_core::checkpoint::{NamedTensors, model_metadata, module_tensors, write_safetensors};
use flick_core::generate::Generator;
use flick_core::model::ModelConfig;
use flick_core::text::{TextEncoderConfig, prompt_from_bytes, tokenize};

/// A small deterministic generator (xorshift), so the inputs are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn tiny() -> ModelConfig {
    ModelConfig::new(
        TextEncoderConfig::new()
            .with_dim(16)
            .with_depth(1)
            .with_heads(2)
            .with_max_len(24),
    )
    .with_frames(2)
    .with_height(8)
    .with_width(8)
    .with_dim(16)
    .with_depth(1)
    .with_heads(2)
    .with_stem_channels(4)
}

/// A tiny model checkpoint's bytes (untrained: what is tested is the handling of inputs).
fn tiny_checkpoint() -> Vec<u8> {
    let cfg = tiny();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let mut t = NamedTensors::new();
    module_tensors(&cfg.init(&Device::flex()), "", &mut t);
    write_safetensors(&p, &t, model_metadata("teacher", &cfg, &BTreeMap::new())).unwrap();
    std::fs::read(p).unwrap()
}

/// Peak resident memory of this process so far (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One hostile prompt of class `k`.
fn prompt(rng: &mut Rng, k: u64) -> String {
    let random_char = |rng: &mut Rng, plane: u32| loop {
        let c = plane * 0x10000 + rng.below(0x10000) as u32;
        if let Some(c) = char::from_u32(c) {
            return c;
        }
    };
    match k {
        0 => String::new(),
        1 => " \t\n\r ".repeat(rng.below(50) as usize),
        // Control characters, NULs and DEL.
        2 => (0..rng.below(200))
            .map(|_| char::from_u32(rng.below(32) as u32).unwrap())
            .chain(['\0', '\u{7f}', '\u{85}'])
            .collect(),
        // Every Unicode plane (0–16), including private use and unassigned code points.
        3 => {
            let plane = rng.below(17) as u32;
            (0..1 + rng.below(100))
                .map(|_| random_char(rng, plane))
                .collect()
        }
        // Right-to-left marks and overrides, zero-width joiners, combining marks, BOMs.
        4 => {
            let marks = [
                '\u{200f}', '\u{202e}', '\u{2067}', '\u{200d}', '\u{0301}', '\u{feff}', '\u{2028}',
            ];
            let mut s = String::from("a large red circle ");
            for _ in 0..rng.below(64) {
                s.push(marks[rng.below(marks.len() as u64) as usize]);
                s.push('ع');
            }
            s
        }
        // Emoji sequences and very long "words".
        5 => "👩‍👩‍👧‍👦🏳️‍🌈".repeat(1 + rng.below(40) as usize) + &"x".repeat(rng.below(5000) as usize),
        // Case-folding that changes the byte length (ß, İ, ﬃ) around a real caption.
        6 => format!(
            "{} a SMALL ẞLUE İ square ﬃ moving UP on navy {}",
            "İ".repeat(rng.below(100) as usize),
            "ß".repeat(rng.below(100) as usize)
        ),
        // Random valid UTF-8 of random length.
        _ => {
            let n = rng.below(400) as usize;
            String::from_utf8_lossy(&rng.bytes(n)).into_owned()
        }
    }
}

#[test]
fn ten_thousand_hostile_prompts_give_a_clip_or_an_error() {
    let device = Device::flex();
    let bytes = tiny_checkpoint();
    let g = Generator::from_bytes(&bytes, &device).unwrap();
    let max_len = g.info.config.text.max_len;
    let mut rng = Rng(0x5eed_f11c);
    let mut prompts: Vec<String> = (0..10_000u64).map(|i| prompt(&mut rng, i % 8)).collect();
    // Three 1 MB prompts.
    for (i, c) in ["a", "é", "😀"].iter().enumerate() {
        prompts[i * 7 + 1] = c.repeat((1 << 20) / c.len());
    }
    let (mut panics, mut clips, mut errors) = (0, 0, 0);
    for p in &prompts {
        let ok = catch_unwind(|| {
            let t = tokenize(p, max_len);
            assert_eq!(t.ids.len(), max_len);
            t
        });
        if ok.is_err() {
            panics += 1;
        }
    }
    // Encode all, in batches of 100; a clip from every 20th (batches of 25, one step).
    for chunk in prompts.chunks(100) {
        let r = catch_unwind(AssertUnwindSafe(|| {
            g.model.encode_text(chunk, &device);
        }));
        panics += r.is_err() as usize;
    }
    let picked: Vec<String> = prompts.iter().step_by(20).cloned().collect();
    for chunk in picked.chunks(25) {
        let seeds: Vec<u64> = (0..chunk.len() as u64).collect();
        match catch_unwind(AssertUnwindSafe(|| {
            g.generate_clips(chunk, &seeds, 1, 2.0, |_, _| {})
        })) {
            Ok(Ok(v)) => {
                assert!(v.iter().all(|c| c.data.iter().all(|x| x.is_finite())));
                clips += v.len();
            }
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                errors += chunk.len();
            }
            Err(_) => panics += 1,
        }
    }
    // Prompts as bytes: valid UTF-8 comes back as the text; anything else is an error that
    // says where.
    let (mut valid, mut invalid) = (0, 0);
    for (i, prompt) in prompts.iter().enumerate().take(2_000) {
        let b = if i % 2 == 0 {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        } else {
            prompt.as_bytes().to_vec()
        };
        match catch_unwind(|| prompt_from_bytes(&b)) {
            Ok(Ok(s)) => {
                assert_eq!(s.as_bytes(), &b[..]);
                valid += 1;
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                assert!(e.contains("UTF-8") && e.contains("byte"), "{e}");
                invalid += 1;
            }
            Err(_) => panics += 1,
        }
    }
    eprintln!(
        "hostile prompts: {} tokenized and encoded, {clips} clips made, {errors} errors, {panics} panics; \
         2,000 byte prompts: {valid} valid, {invalid} refused as invalid UTF-8",
        prompts.len()
    );
    assert_eq!(panics, 0);
    assert_eq!(clips, 500);
    assert!(invalid > 900);
}

/// The safetensors header of `bytes`: (JSON start, JSON end).
fn header_span(bytes: &[u8]) -> (usize, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (8, 8 + n)
}

/// `bytes` with its header replaced by `header` (the data part kept).
fn with_header(bytes: &[u8], header: &serde_json::Value) -> Vec<u8> {
    let (_, end) = header_span(bytes);
    let mut h = serde_json::to_vec(header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[end..]);
    out
}

#[test]
fn a_thousand_corrupted_checkpoints_give_clear_errors_in_bounded_memory() {
    let device = Device::flex();
    let good = tiny_checkpoint();
    assert!(Generator::from_bytes(&good, &device).is_ok());
    let (hs, he) = header_span(&good);
    let header: serde_json::Value = serde_json::from_slice(&good[hs..he]).unwrap();
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();

    // Truncated at every structural boundary: inside the length prefix, at every JSON
    // delimiter of the header, at every tensor's first and last byte, and at 200 random places.
    for n in 0..8 {
        cases.push((format!("truncated at {n}"), good[..n].to_vec()));
    }
    for (i, &b) in good[hs..he].iter().enumerate() {
        if matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"') && i % 3 == 0 {
            cases.push((
                format!("truncated in header at {}", hs + i),
                good[..hs + i].to_vec(),
            ));
        }
    }
    for name in &names {
        let off = &header[name]["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        for cut in [he + a, he + a + 1, he + b - 1] {
            if cut < good.len() {
                cases.push((
                    format!("truncated in {name} at {cut}"),
                    good[..cut].to_vec(),
                ));
            }
        }
    }
    let mut rng = Rng(0xc0ffee);
    for _ in 0..200 {
        let cut = rng.below(good.len() as u64) as usize;
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    // Random bytes: whole files, and bytes flipped in the header and in the data.
    for _ in 0..100 {
        let n = rng.below(4096) as usize;
        cases.push(("random bytes".into(), rng.bytes(n)));
    }
    for _ in 0..100 {
        let mut b = good.clone();
        let huge = rng.next().to_le_bytes();
        b[..8].copy_from_slice(&huge);
        cases.push(("absurd header length".into(), b));
    }
    for _ in 0..150 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(8) {
            let i = hs + rng.below((he - hs) as u64) as usize;
            b[i] = rng.next() as u8;
        }
        cases.push(("header bytes flipped".into(), b));
    }
    for _ in 0..50 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(64) {
            let i = he + rng.below((b.len() - he) as u64) as usize;
            b[i] = rng.next() as u8;
        }
        cases.push(("data bytes flipped".into(), b));
    }
    // Valid headers with absurd shapes, offsets and dtypes.
    let absurd_shapes = [
        serde_json::json!([1u64 << 40]),
        serde_json::json!([u64::MAX]),
        serde_json::json!([1u64 << 32, 1u64 << 32]),
        serde_json::json!([0]),
        serde_json::json!([]),
        serde_json::json!([-1]),
        serde_json::json!([3, 0, 7]),
    ];
    let absurd_offsets = [
        serde_json::json!([0, u64::MAX]),
        serde_json::json!([u64::MAX - 4, u64::MAX]),
        serde_json::json!([8, 4]),
        serde_json::json!([0, 1u64 << 50]),
        serde_json::json!([0]),
        serde_json::json!("zero"),
    ];
    let dtypes = [
        "I64", "BF16", "U8", "F64", "BOOL", "F8_E4M3", "I32", "nonsense",
    ];
    for (i, name) in names.iter().enumerate().take(12) {
        for s in &absurd_shapes {
            let mut h = header.clone();
            h[name]["shape"] = s.clone();
            cases.push((format!("{name} shape {s}"), with_header(&good, &h)));
        }
        for o in &absurd_offsets {
            let mut h = header.clone();
            h[name]["data_offsets"] = o.clone();
            cases.push((format!("{name} offsets {o}"), with_header(&good, &h)));
        }
        let d = dtypes[i % dtypes.len()];
        let mut h = header.clone();
        h[name]["dtype"] = d.into();
        cases.push((format!("{name} dtype {d}"), with_header(&good, &h)));
    }
    // Configs in the metadata: negative, zero, huge, wrong types, unknown fields, and the
    // metadata itself missing or foreign.
    let config: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
    let numbers = [
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(1u64 << 40),
        serde_json::json!(u64::MAX),
        serde_json::json!(1e300),
        serde_json::json!("16"),
        serde_json::json!(null),
        serde_json::json!([16]),
    ];
    let fields = [
        "/frames",
        "/height",
        "/width",
        "/dim",
        "/depth",
        "/heads",
        "/mlp_ratio",
        "/stem_channels",
        "/conv_blocks",
        "/patch/0",
        "/patch/2",
        "/text/dim",
        "/text/depth",
        "/text/heads",
        "/text/max_len",
        "/text/conv_kernel",
        "/unet/blocks",
        "/unet/cond_dim",
        "/unet/channels/0",
        "/nested/snr_power",
    ];
    let meta_case = |cfg: &serde_json::Value| {
        let mut h = header.clone();
        h["__metadata__"]["config"] = serde_json::to_string(cfg).unwrap().into();
        with_header(&good, &h)
    };
    for f in fields {
        for v in &numbers {
            let mut c = config.clone();
            if let Some(slot) = c.pointer_mut(f) {
                *slot = v.clone();
                cases.push((format!("config {f} = {v}"), meta_case(&c)));
            }
        }
    }
    for kind in ["\"unet\"", "\"nested\"", "\"transformer\"", "7"] {
        let mut c = config.clone();
        c["kind"] = serde_json::from_str(kind).unwrap();
        cases.push((format!("config kind {kind}"), meta_case(&c)));
    }
    let mut c = config.clone();
    c["unet"]["channels"] = serde_json::json!(vec![64; 64]);
    cases.push(("64 U-Net levels".into(), meta_case(&c)));
    let mut c = config.clone();
    c["kind"] = "nested".into();
    c["nested"]["outer_channels"] = serde_json::json!(vec![8; 40]);
    cases.push(("40 nested levels".into(), meta_case(&c)));
    let mut c = config.clone();
    c["surprise"] = 1.into();
    cases.push(("unknown config field".into(), meta_case(&c)));
    for (k, v) in [
        ("config", "{not json"),
        ("config", ""),
        ("format", "flick/999"),
        ("kind", ""),
    ] {
        let mut h = header.clone();
        h["__metadata__"][k] = v.into();
        cases.push((format!("metadata {k} = {v:?}"), with_header(&good, &h)));
    }
    let mut h = header.clone();
    h.as_object_mut().unwrap().remove("__metadata__");
    cases.push(("no metadata".into(), with_header(&good, &h)));

    let (mut ok, mut err, mut panics) = (0, 0, Vec::new());
    for (what, bytes) in &cases {
        match catch_unwind(AssertUnwindSafe(|| Generator::from_bytes(bytes, &device))) {
            Ok(Ok(g)) => {
                ok += 1;
                // What loads (data bytes changed, say) still generates.
                if ok <= 20 {
                    let r =
                        catch_unwind(AssertUnwindSafe(|| g.generate("a red circle", 0, 1, 1.0)));
                    if r.is_err() {
                        panics.push(format!("{what} (generating)"));
                    }
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                assert!(e.len() > 10, "{what}: unclear error {e:?}");
                err += 1;
            }
            Err(_) => panics.push(what.clone()),
        }
    }
    let peak = peak_rss_mib().unwrap_or(0.0);
    eprintln!(
        "corrupted checkpoints: {} tried, {err} clear errors, {ok} loaded, {} panics; peak memory {peak:.0} MiB",
        cases.len(),
        panics.len()
    );
    assert!(cases.len() >= 1000, "only {} cases", cases.len());
    assert!(panics.is_empty(), "panics on: {panics:?}");
    assert!(peak < 2048.0, "peak memory {peak:.0} MiB");
}

fn write_gif(path: &std::path::Path, frames: usize, w: u16, h: u16) {
    let mut v = flick_core::video::Video::new(frames, h as usize, w as usize);
    for f in 0..frames {
        for p in v.frame_mut(f).chunks_mut(4) {
            p.copy_from_slice(&[200, 30, 30, 255]);
        }
    }
    v.write_gif(path, 8).unwrap();
}

#[test]
fn a_dataset_folder_of_corrupt_files_skips_and_counts_them() {
    use flick_core::data::folder::FolderDataset;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng(42);
    write_gif(&d.join("good.gif"), 4, 24, 20);
    std::fs::write(d.join("good.txt"), "a red square").unwrap();
    let good = std::fs::read(d.join("good.gif")).unwrap();
    let mut corrupt = 0;
    let mut add = |name: &str, bytes: &[u8]| {
        std::fs::write(d.join(name), bytes).unwrap();
        std::fs::write(d.join(name.replace(".gif", ".txt")), "a caption").unwrap();
        corrupt += 1;
    };
    add("empty.gif", b"");
    add("header-only.gif", &good[..13]);
    add("half.gif", &good[..good.len() / 2]);
    add("random.gif", &rng.bytes(5000));
    add("png-named-gif.gif", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    // A GIF whose screen claims 65535×65535 pixels, and one whose frame does.
    let mut huge = good.clone();
    huge[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    add("huge-screen.gif", &huge);
    let mut huge_frame = good.clone();
    if let Some(i) = huge_frame.iter().position(|&b| b == 0x2c) {
        huge_frame[i + 5..i + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    }
    add("huge-frame.gif", &huge_frame);
    // PNG-frame folders: a corrupt frame, a 0-byte frame, an empty folder.
    for (name, frame) in [("bad-frames", rng.bytes(300)), ("zero-frames", Vec::new())] {
        let f = d.join(name);
        std::fs::create_dir(&f).unwrap();
        image::RgbaImage::from_pixel(8, 8, image::Rgba([0, 255, 0, 255]))
            .save(f.join("000.png"))
            .unwrap();
        std::fs::write(f.join("001.png"), frame).unwrap();
        std::fs::write(d.join(format!("{name}.txt")), "green").unwrap();
    }
    std::fs::create_dir(d.join("no-frames")).unwrap();
    std::fs::write(d.join("no-frames.txt"), "nothing").unwrap();
    // Captions: a caption file of invalid UTF-8, and a clip with none at all.
    write_gif(&d.join("bad-caption.gif"), 2, 8, 8);
    std::fs::write(d.join("bad-caption.txt"), [0xff, 0xfe, 0x00, 0xc3]).unwrap();
    write_gif(&d.join("uncaptioned.gif"), 2, 8, 8);
    std::fs::write(
        d.join("captions.jsonl"),
        b"{\"file\": 3}\nnot json\n\xff\xfe\n",
    )
    .unwrap();
    let expected_skipped = corrupt + 3 + 2;

    let ds = catch_unwind(|| FolderDataset::open(d, 4, 16, 16))
        .expect("no panic")
        .unwrap();
    let names: Vec<String> = ds
        .skipped
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    eprintln!(
        "dataset folder: {} usable, {} skipped:\n  {}",
        ds.len(),
        ds.skipped.len(),
        names.join("\n  ")
    );
    assert_eq!(ds.len(), 1, "{names:?}");
    assert_eq!(ds.skipped.len(), expected_skipped, "{names:?}");
}

#[test]
fn broken_configs_are_errors_naming_the_key_and_the_file() {
    use flick_trainer::config::TeacherConfig;
    let good = std::fs::read_to_string(common::root().join("configs/teacher-tiny.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("dim = 32", "dim = \"wide\"", "dim"),
        ("dim = 32", "dim = -32", "dim"),
        ("dim = 32", "dim = 1e99", "dim"),
        ("depth = 2", "depth = 100000000", "depth"),
        ("[train]", "[train]\nsurprise = 1", "surprise"),
        ("[model]", "[model]\nwidht = 16", "widht"),
        ("lr = 2e-3", "lr = \"fast\"", "lr"),
        ("steps = 60", "steps = -5", "steps"),
    ];
    let mut checked = 0;
    for (i, (from, to, key)) in cases.iter().enumerate() {
        assert!(good.contains(from), "teacher-tiny.toml lacks {from:?}");
        let text = good.replacen(from, to, 1);
        let path = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = format!("{:#}", TeacherConfig::load(&path).unwrap_err());
        assert!(
            err.contains(key) && err.contains(&format!("broken-{i}.toml")),
            "case {to:?}: {err}"
        );
        checked += 1;
    }
    eprintln!("broken configs: {checked} tried, {checked} errors naming the key and the file");
}
