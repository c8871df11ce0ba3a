//! Training through the fused operations: the autodiff backend runs the inner backend's forward
//! (the kernel on wgpu) and registers the inner backend's backward (the backward kernels on
//! wgpu, the composed reference elsewhere) as the gradient, so no `[Nq, Nk]` matrix is kept
//! for the backward pass. The attention bias is a constant (a padding mask): it gets no
//! gradient.

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, tensor::FloatTensor};

use crate::ops::FusedOps;

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend + FusedOps> Backward<B, 3> for AttentionBackward {
    /// q, k, v, bias, o, lse, scale
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f32,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (q, k, v, bias, o, lse, scale) = ops.state;
        let (dq, dk, dv) = B::fused_attention_bwd(q, k, v, bias, o, lse, dout, scale);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct AdaLnBackward;

impl<B: Backend + FusedOps> Backward<B, 3> for AdaLnBackward {
    /// x, scale, stats
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_shift, node_scale] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, scale, stats) = ops.state;
        let (dx, dshift, dscale) = B::fused_adaln_bwd(x, scale, stats, dy);
        for (node, grad) in [(node_x, dx), (node_shift, dshift), (node_scale, dscale)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: Backend + FusedOps> Backward<B, 3> for ConvBackward {
    /// x, w
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_bias] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        // Only the gradients something asks for: a clip entering the stem needs none.
        if node_w.is_some() || node_bias.is_some() {
            let (dw, dbias) = B::fused_conv3d_bwd_w(x.clone(), w.clone(), dy.clone());
            for (node, grad) in [(node_w, dw), (node_bias, dbias)] {
                if let Some(node) = node {
                    grads.register::<B>(node.id, grad);
                }
            }
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::fused_conv3d_bwd_x(x, w, dy));
        }
    }
}

#[derive(Debug)]
struct RowNormBackward;

impl<B: Backend + FusedOps> Backward<B, 1> for RowNormBackward {
    /// x, stats
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let (x, stats) = ops.state;
            grads.register::<B>(node.id, B::fused_row_norm_bwd(x, stats, dy));
        }
    }
}

/// GELU (`silu: false`) or SiLU (`silu: true`).
#[derive(Debug)]
struct ActivationBackward {
    silu: bool,
}

impl<B: Backend + FusedOps> Backward<B, 1> for ActivationBackward {
    /// x
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let dx = if self.silu {
                B::fused_silu_bwd(ops.state, dy)
            } else {
                B::fused_gelu_bwd(ops.state, dy)
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// GELU (`silu: false`) or SiLU (`silu: true`) on the inner backend, its gradient registered.
fn activation<B: Backend + FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    silu: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let guards = [x.node()];
    let x = x.into_primitive();
    let y = if silu {
        B::fused_silu(x.clone())
    } else {
        B::fused_gelu(x.clone())
    };
    let op = ActivationBackward { silu };
    match op.prepare::<C>(guards).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(x, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let guards = [q.node(), k.node(), v.node()];
        let (q, k, v, bias) = (
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            bias.into_primitive(),
        );
        let (o, lse) = B::fused_attention_fwd(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
        match AttentionBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((q, k, v, bias, o.clone(), lse, scale), o),
            OpsKind::UnTracked(prep) => prep.finish(o),
        }
    }

    fn fused_adaln(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), shift.node(), scale.node()];
        let (x, shift, scale) = (
            x.into_primitive(),
            shift.into_primitive(),
            scale.into_primitive(),
        );
        let (y, stats) = B::fused_adaln_fwd(x.clone(), shift, scale.clone(), eps);
        match AdaLnBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, scale, stats), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), w.node(), bias.node()];
        let (x, w, bias) = (
            x.into_primitive(),
            w.into_primitive(),
            bias.into_primitive(),
        );
        let y = B::fused_conv3d_fwd(x.clone(), w.clone(), bias);
        match ConvBackward.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, w), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_row_norm(x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let guards = [x.node()];
        let x = x.into_primitive();
        let (y, stats) = B::fused_row_norm_fwd(x.clone(), eps);
        match RowNormBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, stats), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::<B, C>(x, false)
    }

    fn fused_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::<B, C>(x, true)
    }

    fn fused_adamw(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        s: FloatTensor<Self>,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        lr: f32,
        decay: f32,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        // An optimizer step: computed on the inner backend, outside the graph.
        let lift = <Self as burn::backend::AutodiffBackend>::from_inner;
        let (w, m, v, a) = B::fused_adamw(
            w.into_primitive(),
            g.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            a.into_primitive(),
            s.into_primitive(),
            beta1,
            beta2,
            eps,
            weight_decay,
            lr,
            decay,
        );
        (lift(w), lift(m), lift(v), lift(a))
    }

    fn fused_sumsq(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        row: usize,
    ) -> FloatTensor<Self> {
        // The optimizer's gradient norm: computed on the inner backend, outside the graph.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::fused_sumsq(
            x.into_primitive(),
            table.into_primitive(),
            row,
        ))
    }

    fn clip_pixels(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // For display only: computed on the inner backend, outside the graph.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::clip_pixels(x.into_primitive()))
    }
}
