//! A prompt from anywhere: bytes to text (UTF-8 or a clear error), normalised, tokenized to
//! exactly `max_len` ids, and — when it fits — read back to the normalised text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use flick_core::text::{detokenize, normalize, prompt_from_bytes, tokenize};
    let text = match prompt_from_bytes(data) {
        Ok(t) => t,
        Err(_) => String::from_utf8_lossy(data).into_owned(),
    };
    for max_len in [2, 16, 96] {
        let t = tokenize(&text, max_len);
        assert_eq!(t.ids.len(), max_len);
        assert!(t.len <= max_len);
        if !t.truncated {
            assert_eq!(detokenize(&t.ids), normalize(&text));
        }
    }
});
