pub use flick_core::*;
