//! Quality measurement of generated clips.
//!
//! [`analytic`] reads the attributes of a single-object procedural clip straight from its pixels
//! (background by majority colour, object by difference from it, motion from the centroid
//! track): no learned judge, so it needs no training and cannot be fooled the way a classifier
//! can — but it only understands clips that look like the procedural ones.
//!
//! [`probe`] is the learned judge for `flick eval`: a small spatio-temporal CNN trained on
//! ground-truth procedural clips, whose penultimate features feed the distribution metrics of
//! [`metrics`] (Fréchet distance, precision/recall, diversity).

pub mod analytic;
pub mod artifacts;
pub mod metrics;
pub mod probe;
