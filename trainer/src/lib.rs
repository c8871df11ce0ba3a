//! flick-trainer: the training loops (optimisers, schedules, resume, logging) and the `flick`
//! command line. Models, data and sampling live in `flick-core`.

pub mod bench;
pub mod bench_train;
pub mod cli;
pub mod config;
pub mod distill;
pub mod dmd;
pub mod eval;
pub mod heap;
pub mod optim;
pub mod plot;
pub mod probe;
pub mod run;
pub mod score;
pub mod train;
