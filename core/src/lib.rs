//! # flick-core
//!
//! Everything both training and inference need, with no CLI, window or file dialog:
//! procedural and folder data ([`data`]), the byte tokenizer and text encoder ([`text`]), the
//! video diffusion transformer ([`model`]), rectified flow ([`flow`]), generation
//! ([`generate`]), clips and their exports ([`video`]), and checkpoints ([`checkpoint`]).
//! Compiles to `wasm32-unknown-unknown`.

pub use flick_shaders as shaders;
pub mod bundled;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod distill;
pub mod eval;
pub mod flow;
pub mod generate;
pub mod model;
pub mod params;
pub mod text;
pub mod video;

pub use burn;

/// Errors of the library: each names what was wrong and what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("dataset: {0}")]
    Data(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("device: {0}")]
    Device(String),
    #[error("i/o: {0}")]
    Io(String),
}
