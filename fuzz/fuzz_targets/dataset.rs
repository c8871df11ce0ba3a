//! A dataset folder's files from anywhere: the bytes as an animated GIF, as a PNG frame and as
//! `captions.jsonl` text — frames or an error, never a panic or unbounded memory.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use flick_core::data::folder::{decode_gif_from, decode_png_from, parse_captions};
    if let Ok(frames) = decode_gif_from(Cursor::new(data)) {
        assert!(frames.iter().all(|f| f.width() <= 8192 && f.height() <= 8192));
    }
    let _ = decode_png_from(Cursor::new(data), 64 << 20);
    let _ = parse_captions(&String::from_utf8_lossy(data), "fuzz");
});
