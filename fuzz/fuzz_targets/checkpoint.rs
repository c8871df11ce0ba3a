//! A checkpoint from anywhere: read, its metadata and config checked, the model built and
//! loaded — an error or a model, never a panic, an abort or memory the file did not pay for.
#![no_main]

use burn::prelude::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flick_core::checkpoint::load_model_bytes(data, &Device::flex());
});
