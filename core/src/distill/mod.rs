//! Distilling the multi-step teacher into a one-step generator `G(z, c) = z − v̂(z, c, t = 1)`.
//!
//! - [`pairs`]: the teacher's ODE solutions `(z, caption, x_teacher)`, cached in shards on disk
//!   (the deterministic init regresses on them; DMD's regression loss reuses them).
//! - [`dmd`]: distribution matching (DMD/DMD2): the gradient from a real and a fake score, in
//!   flow-matching form.
//! - [`losses`]: the adversarial objectives of APT and its baselines (non-saturating,
//!   relativistic, WGAN) and their penalties (approximate R1/R2, finite-difference R1 and
//!   gradient penalty).
//!
//! The training loops are in the trainer (`flick distill`); the discriminator is
//! [`crate::model::disc::Discriminator`].

pub mod dmd;
pub mod losses;
pub mod pairs;

use burn::prelude::*;

use crate::model::Backbone;
use crate::text::TextContext;

/// One-step generation: `x = z − v̂(z, c, t = 1)`, one Euler step from pure noise to t = 0.
/// `z: [B, 3, T, H, W]` → `[B, 3, T, H, W]`.
pub fn one_step(model: &Backbone, z: Tensor<5>, text: &TextContext) -> Tensor<5> {
    let b = z.dims()[0];
    let t = Tensor::<1>::ones([b], &z.device());
    z.clone() - model.forward(z, t, text)
}
