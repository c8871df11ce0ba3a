//! One method per kernel: shapes in, a new buffer out.

use flick_shaders::Variant;

use crate::gpu::{Buf, Gpu};

/// Activation after a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None = 0,
    Gelu = 1,
    Silu = 2,
}

fn groups(n: usize) -> usize {
    n.div_ceil(64)
}

impl Gpu {
    /// Check that this adapter computes what the model needs before a model is downloaded for it:
    /// dense-layer products (a 2×2 one and ones times ones at a row-vector shape like the timestep
    /// MLP's) read back right.
    pub async fn check(&self) -> Result<(), String> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let a = self.upload(&[1.0, 2.0, 3.0, 4.0]);
        let product = self
            .read(&self.linear(&a, 2, &a, None, None, Act::None))
            .await;
        if let Some(e) = scope.pop().await {
            return Err(format!("the dense-layer kernel was refused: {e}"));
        }
        let product = product?;
        if product != [7.0, 10.0, 15.0, 22.0] {
            return Err(format!("a 2×2 product came back as {product:?}"));
        }
        for rows in [1usize, 8] {
            let x = self.upload(&vec![1.0; rows * 64]);
            let w = self.upload(&vec![1.0; 64 * 256]);
            let y = self
                .read(&self.linear(&x, rows, &w, None, None, Act::None))
                .await?;
            if let Some(bad) = y.iter().find(|&&v| v != 64.0) {
                return Err(format!(
                    "a {rows}×64 by 64×256 product of ones has an element {bad}, not 64"
                ));
            }
        }
        Ok(())
    }

    /// `act(x·w + bias + r)`: x `[m, k]`, w `[k, n]`, bias `[n]`, r read cyclically.
    pub fn linear(
        &self,
        x: &Buf,
        m: usize,
        w: &Buf,
        bias: Option<&Buf>,
        r: Option<&Buf>,
        act: Act,
    ) -> Buf {
        let k = x.len / m;
        let n = w.len / k;
        debug_assert_eq!(x.len, m * k);
        debug_assert_eq!(w.len, k * n);
        let y = self.alloc(m * n);
        let flags = bias.is_some() as u32 | (r.is_some() as u32) << 1;
        let rlen = r.map_or(1, |r| r.len);
        // Two distinct zero buffers: WebGPU refuses one buffer bound twice to a kernel whose
        // bindings are writable.
        let (no_bias, no_r) = (self.zeros(1), self.zeros(2));
        self.launch(
            "linear",
            Variant::PLAIN,
            &[x, w, bias.unwrap_or(&no_bias), r.unwrap_or(&no_r), &y],
            &[m as u32, k as u32, n as u32, flags, act as u32, rlen as u32],
            m.div_ceil(32) * n.div_ceil(32),
        );
        y
    }

    /// Layer norm of the rows `[rows, d]` of `x`, modulated by `m` (see `norm_mod.wgsl`).
    #[allow(clippy::too_many_arguments)]
    pub fn norm_mod(
        &self,
        x: &Buf,
        d: usize,
        n: usize,
        m: &Buf,
        mstride: usize,
        off: usize,
        eps: f32,
    ) -> Buf {
        let rows = x.len / d;
        let y = self.alloc(x.len);
        self.launch(
            "norm_mod",
            Variant::PLAIN,
            &[x, m, &y],
            &[
                rows as u32,
                n as u32,
                d as u32,
                eps.to_bits(),
                mstride as u32,
                off as u32,
            ],
            rows,
        );
        y
    }

    /// Group norm of `[b, c, positions]` in `g` groups (or none), modulated per sample and
    /// channel by `m` `[b, 2c]` (shift, scale), then SiLU if asked.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_mod(
        &self,
        x: &Buf,
        b: usize,
        c: usize,
        g: usize,
        m: &Buf,
        normalise: bool,
        silu: bool,
    ) -> Buf {
        let p = x.len / (b * c);
        let y = self.alloc(x.len);
        let flags = normalise as u32 | (silu as u32) << 1;
        self.launch(
            "group_norm_mod",
            Variant::PLAIN,
            &[x, m, &y],
            &[
                (b * g) as u32,
                c as u32,
                p as u32,
                g as u32,
                1e-6f32.to_bits(),
                flags,
            ],
            b * g,
        );
        y
    }

    /// `out[oo + i] = a·x[xo + i] + b·y[yo + i mod ylen]`, `i < n`, into `out` (a new buffer of
    /// `n` values where `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn axpby_into(
        &self,
        out: Option<&Buf>,
        n: usize,
        a: f32,
        x: (&Buf, usize),
        b: f32,
        y: (&Buf, usize),
        ylen: usize,
        oo: usize,
    ) -> Buf {
        let out = out.cloned().unwrap_or_else(|| self.alloc(n));
        self.launch(
            "axpby",
            Variant::PLAIN,
            &[x.0, y.0, &out],
            &[
                n as u32,
                x.1 as u32,
                y.1 as u32,
                oo as u32,
                a.to_bits(),
                b.to_bits(),
                ylen as u32,
            ],
            groups(n),
        );
        out
    }

    /// `a·x + b·y` (same lengths).
    pub fn axpby(&self, a: f32, x: &Buf, b: f32, y: &Buf) -> Buf {
        debug_assert_eq!(x.len, y.len);
        self.axpby_into(None, x.len, a, (x, 0), b, (y, 0), y.len, 0)
    }

    /// SiLU in place.
    pub fn silu(&self, x: &Buf) {
        self.launch("silu", Variant::PLAIN, &[x], &[x.len as u32], groups(x.len));
    }

    /// `x + z·gate` with the gate of each row's sample from `g` (see `gate_add.wgsl`).
    pub fn gate_add(&self, x: &Buf, z: &Buf, d: usize, n: usize, g: (&Buf, usize, usize)) -> Buf {
        let rows = x.len / d;
        let y = self.alloc(x.len);
        self.launch(
            "gate_add",
            Variant::PLAIN,
            &[x, z, g.0, &y],
            &[rows as u32, n as u32, d as u32, g.1 as u32, g.2 as u32],
            groups(x.len),
        );
        y
    }

    /// Heads `[b, h, n, dh]` from rows `[b·n]` of width `stride` starting at column `off`.
    #[allow(clippy::too_many_arguments)]
    pub fn split_heads(
        &self,
        x: &Buf,
        b: usize,
        n: usize,
        h: usize,
        dh: usize,
        stride: usize,
        off: usize,
    ) -> Buf {
        let y = self.alloc(b * h * n * dh);
        self.launch(
            "heads",
            Variant::PLAIN,
            &[x, &y],
            &[
                b as u32,
                n as u32,
                h as u32,
                dh as u32,
                stride as u32,
                off as u32,
                0,
            ],
            groups(y.len),
        );
        y
    }

    /// Rows `[b, n, h·dh]` from heads `[b, h, n, dh]`.
    pub fn merge_heads(&self, x: &Buf, b: usize, n: usize, h: usize, dh: usize) -> Buf {
        let y = self.alloc(x.len);
        self.launch(
            "heads",
            Variant::PLAIN,
            &[x, &y],
            &[b as u32, n as u32, h as u32, dh as u32, 0, 0, 1],
            groups(x.len),
        );
        y
    }

    /// `softmax(q·kᵀ/√dh + bias)·v` per head: q `[b, h, nq, dh]`, k and v `[b, h, nk, dh]`, bias
    /// `[b, nk]` → `[b, h, nq, dh]` (Flick's fused attention kernel).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &Buf,
        k: &Buf,
        v: &Buf,
        bias: &Buf,
        b: usize,
        h: usize,
        nq: usize,
        nk: usize,
    ) -> Buf {
        let dh = q.len / (b * h * nq);
        let splits = flick_shaders::attention_splits(dh as u32, b * h, nq);
        let per_group = 64 / splits as usize;
        let qtiles = nq.div_ceil(per_group);
        let o = self.alloc(q.len);
        let lse = self.alloc(b * h * nq);
        let scale = 1.0 / (dh as f32).sqrt();
        self.launch(
            "attn_fwd",
            Variant::attention(dh as u32, splits),
            &[q, k, v, bias, &o, &lse],
            &[
                (b * h) as u32,
                h as u32,
                nq as u32,
                nk as u32,
                scale.to_bits(),
                qtiles as u32,
            ],
            b * h * qtiles,
        );
        o
    }

    /// 3-D convolution `kt×3×3`, stride 1, size-keeping zero padding: x `[b, ci, t, hh, ww]`, w
    /// `[co, ci, kt, 3, 3]`, bias `[co]` → `[b, co, t, hh, ww]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &self,
        x: &Buf,
        b: usize,
        ci: usize,
        [t, hh, ww]: [usize; 3],
        w: &Buf,
        bias: &Buf,
        kt: usize,
    ) -> Buf {
        let co = bias.len;
        let plane = t * hh * ww;
        let y = self.alloc(b * co * plane);
        self.launch(
            "conv_fwd",
            Variant::conv(kt as u32),
            &[x, w, bias, &y],
            &[
                b as u32, ci as u32, co as u32, t as u32, hh as u32, ww as u32, 1,
            ],
            groups(b * co.div_ceil(4) * plane),
        );
        y
    }

    /// Patches of `[b, c, t, h, w]` as rows `[b·tokens, c·pt·ph·pw]`.
    pub fn patchify(
        &self,
        x: &Buf,
        b: usize,
        c: usize,
        [t, h, w]: [usize; 3],
        [pt, ph, pw]: [usize; 3],
    ) -> Buf {
        let y = self.alloc(x.len);
        self.launch(
            "patchify",
            Variant::PLAIN,
            &[x, &y],
            &[b, c, t, h, w, pt, ph, pw].map(|v| v as u32),
            groups(x.len),
        );
        y
    }

    /// Token rows `[b·tokens, pt·ph·pw·co]` into channels `0..co` of `into` `[b, ct, t, h, w]`.
    #[allow(clippy::too_many_arguments)]
    pub fn unpatchify_into(
        &self,
        x: &Buf,
        into: &Buf,
        b: usize,
        co: usize,
        ct: usize,
        [t, h, w]: [usize; 3],
        [pt, ph, pw]: [usize; 3],
    ) {
        self.launch(
            "unpatchify",
            Variant::PLAIN,
            &[x, into],
            &[b, co, t, h, w, pt, ph, pw, ct].map(|v| v as u32),
            groups(b * co * t * h * w),
        );
    }

    /// `y[i·ys + yo + j] = x[i·xs + xo + j]` for `j < per`, `i < batches`.
    #[allow(clippy::too_many_arguments)]
    pub fn copy(
        &self,
        x: &Buf,
        y: &Buf,
        batches: usize,
        per: usize,
        (xs, xo): (usize, usize),
        (ys, yo): (usize, usize),
    ) {
        self.launch(
            "copy",
            Variant::PLAIN,
            &[x, y],
            &[batches, per, xs, xo, ys, yo].map(|v| v as u32),
            groups(batches * per),
        );
    }

    /// Windows of `k` positions of `[b, l, c]` as rows `[b·l, c·k]`.
    pub fn im2col1d(&self, x: &Buf, b: usize, l: usize, c: usize, k: usize) -> Buf {
        let y = self.alloc(x.len * k);
        self.launch(
            "im2col1d",
            Variant::PLAIN,
            &[x, &y],
            &[b, l, c, k].map(|v| v as u32),
            groups(y.len),
        );
        y
    }

    /// `y[b, c] = Σ_j mask[b, j]·x[b, j, c]`.
    pub fn masked_mean(&self, x: &Buf, mask: &Buf, b: usize, l: usize) -> Buf {
        let c = x.len / (b * l);
        let y = self.alloc(b * c);
        self.launch(
            "masked_mean",
            Variant::PLAIN,
            &[x, mask, &y],
            &[b, l, c].map(|v| v as u32),
            groups(b * c),
        );
        y
    }

    /// Clips `[b, 3, t, h, w]` in [-1, 1] → RGBA8 frames, one buffer per clip (`clip_pixels`:
    /// packed on the device, a third of the read-back).
    pub async fn clip_rgba(&self, x: &Buf, dims: [usize; 5]) -> Result<Vec<Vec<u8>>, String> {
        let packed = self.clip_pixels(x, dims);
        let values = self.read(&packed).await?;
        Ok(flick_shaders::unpack(values, dims))
    }

    /// The clips `x` (`dims` = `[b, 3, t, h, w]`) as packed RGBA pixels, one u32 per pixel
    /// stored in an f32 slot (`flick_shaders::unpack` reads them).
    pub fn clip_pixels(&self, x: &Buf, dims: [usize; 5]) -> Buf {
        let [b, _, t, h, w] = dims;
        let packed = self.alloc(b * t * h * w);
        self.launch(
            "clip_pixels",
            Variant::PLAIN,
            &[x, &packed],
            &[b as u32, (t * h * w) as u32],
            groups(packed.len),
        );
        packed
    }
}
