//! The DiT's weights on the device and its forward pass, launch by launch (the same computation
//! as `flick_core::model::VideoDit` and `flick_core::text::TextEncoder`, which are the
//! reference: `tests/parity.rs`).

use flick_core::checkpoint::{CheckpointInfo, NamedTensors};
use flick_core::model::layers::factorised_positions;
use flick_core::model::{AttentionMode, BackboneKind, ModelConfig, Prediction, preconditioning};
use flick_core::text::tokenize_batch;

use crate::gpu::{Buf, Gpu};
use crate::ops::Act;

/// burn's `LayerNorm` epsilon (the text encoder's and the cross-attention's norms).
const LAYER_NORM_EPS: f32 = 1e-5;
/// The adaLN layer norm's epsilon.
const ADALN_EPS: f32 = flick_shaders::LN_EPS;

struct Dense {
    w: Buf,
    b: Option<Buf>,
}

/// A layer norm's `[β, γ − 1]` (the modulation `norm_mod.wgsl` reads).
struct Norm(Buf);

struct Conv {
    w: Buf,
    b: Buf,
    cin: usize,
    kt: usize,
}

struct ConvBlock {
    ada: Dense,
    conv1: Conv,
    conv2: Conv,
    groups: usize,
}

struct Block {
    ada: Dense,
    qkv: Dense,
    out: Dense,
    cross_norm: Norm,
    cross_q: Dense,
    cross_kv: Dense,
    cross_out: Dense,
    fc1: Dense,
    fc2: Dense,
}

struct TextLayer {
    norm1: Norm,
    qkv: Dense,
    out: Dense,
    norm2: Norm,
    fc1: Dense,
    fc2: Dense,
}

/// Encoded prompts on the device, with every block's cross-attention keys and values (computed
/// once per prompt, not once per step).
pub struct Text {
    pub rows: usize,
    pub tokens: Buf,
    pub bias: Buf,
    pub pooled: Buf,
    /// Per block: keys and values `[rows, heads, L, dh]`.
    kv: Vec<(Buf, Buf)>,
}

/// The model, ready on a GPU.
pub struct Dit {
    pub info: CheckpointInfo,
    embed: Vec<f32>,
    text_pos: Vec<f32>,
    text_conv: Option<(Dense, usize)>,
    text_layers: Vec<TextLayer>,
    text_norm: Norm,
    stem: Option<Conv>,
    stem_blocks: Vec<ConvBlock>,
    patch: Dense,
    positions: Buf,
    t_fc1: Dense,
    t_fc2: Dense,
    text_pool: Dense,
    blocks: Vec<Block>,
    final_ada: Dense,
    final_proj: Dense,
    head1: Option<Conv>,
    head2: Option<Conv>,
    head_ada: Option<Dense>,
    head_blocks: Vec<ConvBlock>,
}

/// What the engine runs, checked before any weight is read: the DiT with full attention and
/// head widths the attention kernel is built for.
pub fn check_supported(c: &ModelConfig) -> Result<(), String> {
    if c.kind != BackboneKind::Dit {
        return Err(format!(
            "this engine runs the DiT backbone; this model is a {:?} (use the CPU or burn engine)",
            c.kind
        ));
    }
    if c.attention != AttentionMode::Full {
        return Err(
            "this engine runs full space-time attention only (the model factorises it)".into(),
        );
    }
    for (what, dim, heads) in [
        ("model", c.dim, c.heads),
        ("text encoder", c.text.dim, c.text.heads),
    ] {
        let dh = (dim / heads) as u32;
        if !flick_shaders::HEAD_DIMS.contains(&dh) {
            return Err(format!(
                "the {what}'s attention heads are {dh} wide; the attention kernel is built for {:?}",
                flick_shaders::HEAD_DIMS
            ));
        }
    }
    Ok(())
}

/// Takes tensors out of a checkpoint by name, checking shapes.
struct Weights<'a> {
    gpu: &'a Gpu,
    t: NamedTensors,
}

impl Weights<'_> {
    fn host(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let (s, v) = self
            .t
            .remove(name)
            .ok_or_else(|| format!("the checkpoint has no tensor {name}"))?;
        if s != shape {
            return Err(format!("tensor {name} is {s:?}, expected {shape:?}"));
        }
        Ok(v)
    }

    fn buf(&mut self, name: &str, shape: &[usize]) -> Result<Buf, String> {
        let v = self.host(name, shape)?;
        Ok(self.gpu.upload(&v))
    }

    fn dense(&mut self, name: &str, i: usize, o: usize) -> Result<Dense, String> {
        let w = self.buf(&format!("{name}.weight"), &[i, o])?;
        let b = match self.t.contains_key(&format!("{name}.bias")) {
            true => Some(self.buf(&format!("{name}.bias"), &[o])?),
            false => None,
        };
        Ok(Dense { w, b })
    }

    /// Dense layers with the same input side by side: one launch computes all their outputs.
    fn fused(&mut self, names: &[String], i: usize, o: usize) -> Result<Dense, String> {
        let n = names.len();
        let mut w = vec![0f32; i * o * n];
        let mut b = vec![0f32; o * n];
        for (j, name) in names.iter().enumerate() {
            let wj = self.host(&format!("{name}.weight"), &[i, o])?;
            for r in 0..i {
                w[r * o * n + j * o..r * o * n + (j + 1) * o]
                    .copy_from_slice(&wj[r * o..(r + 1) * o]);
            }
            let bj = self.host(&format!("{name}.bias"), &[o])?;
            b[j * o..(j + 1) * o].copy_from_slice(&bj);
        }
        Ok(Dense {
            w: self.gpu.upload(&w),
            b: Some(self.gpu.upload(&b)),
        })
    }

    fn norm(&mut self, name: &str, d: usize) -> Result<Norm, String> {
        let gamma = self.host(&format!("{name}.gamma"), &[d])?;
        let beta = self.host(&format!("{name}.beta"), &[d])?;
        let mut m = beta;
        m.extend(gamma.iter().map(|g| g - 1.0));
        Ok(Norm(self.gpu.upload(&m)))
    }

    fn conv(&mut self, name: &str, cout: usize, cin: usize, kt: usize) -> Result<Conv, String> {
        Ok(Conv {
            w: self.buf(&format!("{name}.weight"), &[cout, cin, kt, 3, 3])?,
            b: self.buf(&format!("{name}.bias"), &[cout])?,
            cin,
            kt,
        })
    }

    fn conv_block(&mut self, name: &str, c: usize, cond: usize) -> Result<ConvBlock, String> {
        Ok(ConvBlock {
            ada: self.dense(&format!("{name}.ada"), cond, 2 * c)?,
            conv1: self.conv(&format!("{name}.conv1"), c, c, 1)?,
            conv2: self.conv(&format!("{name}.conv2"), c, c, 1)?,
            groups: [8, 4, 2, 1]
                .into_iter()
                .find(|g| c.is_multiple_of(*g))
                .unwrap_or(1),
        })
    }
}

impl Dit {
    /// Upload a checkpoint's tensors (`flick_core::checkpoint::read_safetensors_bytes`).
    pub fn new(gpu: &Gpu, info: CheckpointInfo, tensors: NamedTensors) -> Result<Self, String> {
        let c = info.config.clone();
        check_supported(&c)?;
        let mut w = Weights { gpu, t: tensors };
        let d = c.dim;
        let td = c.text.dim;
        let cs = c.stem_channels;
        let [pt, ph, pw] = c.patch;
        let qkv = |p: &str| ["q", "k", "v"].map(|x| format!("{p}.{x}")).to_vec();
        let text_conv = if c.text.conv_kernel > 0 {
            let k = c.text.conv_kernel;
            // [co, ci, k] → [ci·k, co]: the rows im2col1d makes.
            let raw = w.host("text.conv.weight", &[td, td, k])?;
            let mut t = vec![0f32; raw.len()];
            for o in 0..td {
                for r in 0..td * k {
                    t[r * td + o] = raw[o * td * k + r];
                }
            }
            let b = w.buf("text.conv.bias", &[td])?;
            Some((
                Dense {
                    w: gpu.upload(&t),
                    b: Some(b),
                },
                k,
            ))
        } else {
            None
        };
        let text_layers = (0..c.text.depth)
            .map(|i| {
                let p = format!("text.layers.{i}");
                Ok(TextLayer {
                    norm1: w.norm(&format!("{p}.norm1"), td)?,
                    qkv: w.fused(&qkv(&format!("{p}.attn")), td, td)?,
                    out: w.dense(&format!("{p}.attn.out"), td, td)?,
                    norm2: w.norm(&format!("{p}.norm2"), td)?,
                    fc1: w.dense(&format!("{p}.mlp.fc1"), td, 4 * td)?,
                    fc2: w.dense(&format!("{p}.mlp.fc2"), 4 * td, td)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let in_ch = if cs > 0 { cs } else { 3 };
        let out_ch = if cs > 0 { cs } else { 3 };
        // Conv3d [d, in, pt, ph, pw] → [in·pt·ph·pw, d]: the rows patchify makes.
        let raw = w.host("patch_embed.weight", &[d, in_ch, pt, ph, pw])?;
        let k = in_ch * pt * ph * pw;
        let mut pe = vec![0f32; raw.len()];
        for o in 0..d {
            for r in 0..k {
                pe[r * d + o] = raw[o * k + r];
            }
        }
        let patch = Dense {
            w: gpu.upload(&pe),
            b: Some(w.buf("patch_embed.bias", &[d])?),
        };
        let grid = [c.frames / pt, c.height / ph, c.width / pw];
        let positions = gpu.upload(&factorised_positions(grid[0], grid[1], grid[2], d));
        let blocks = (0..c.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(Block {
                    ada: w.dense(&format!("{p}.ada"), d, 6 * d)?,
                    qkv: w.fused(&qkv(&format!("{p}.attn")), d, d)?,
                    out: w.dense(&format!("{p}.attn.out"), d, d)?,
                    cross_norm: w.norm(&format!("{p}.cross_norm"), d)?,
                    cross_q: w.dense(&format!("{p}.cross.q"), d, d)?,
                    cross_kv: w.fused(&["k", "v"].map(|x| format!("{p}.cross.{x}")), td, d)?,
                    cross_out: w.dense(&format!("{p}.cross.out"), d, d)?,
                    fc1: w.dense(&format!("{p}.mlp.fc1"), d, d * c.mlp_ratio)?,
                    fc2: w.dense(&format!("{p}.mlp.fc2"), d * c.mlp_ratio, d)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let n_conv = if cs > 0 { c.conv_blocks } else { 0 };
        let model = Dit {
            embed: w.host("text.embed.weight", &[flick_core::text::VOCAB, td])?,
            text_pos: w.host("text.pos", &[c.text.max_len, td])?,
            text_conv,
            text_layers,
            text_norm: w.norm("text.norm", td)?,
            stem: (cs > 0).then(|| w.conv("stem", cs, 3, 3)).transpose()?,
            stem_blocks: (0..n_conv)
                .map(|i| w.conv_block(&format!("stem_blocks.{i}"), cs, d))
                .collect::<Result<_, _>>()?,
            patch,
            positions,
            t_fc1: w.dense("t_fc1", 256, d)?,
            t_fc2: w.dense("t_fc2", d, d)?,
            text_pool: w.dense("text_pool", td, d)?,
            blocks,
            final_ada: w.dense("final_ada", d, 2 * d)?,
            final_proj: w.dense("final_proj", d, pt * ph * pw * out_ch)?,
            head1: (cs > 0)
                .then(|| w.conv("head1", cs, 2 * cs, 1))
                .transpose()?,
            head2: (cs > 0).then(|| w.conv("head2", 3, cs, 1)).transpose()?,
            head_ada: (cs > 0 && c.head_modulation)
                .then(|| w.dense("head_ada", d, 2 * cs))
                .transpose()?,
            head_blocks: (0..n_conv)
                .map(|i| w.conv_block(&format!("head_blocks.{i}"), cs, d))
                .collect::<Result<_, _>>()?,
            info,
        };
        if let Some(name) = w.t.keys().next() {
            return Err(format!(
                "the checkpoint has a tensor this engine does not know: {name}"
            ));
        }
        Ok(model)
    }

    fn config(&self) -> &ModelConfig {
        &self.info.config
    }

    fn dense(&self, gpu: &Gpu, x: &Buf, rows: usize, l: &Dense, r: Option<&Buf>, act: Act) -> Buf {
        gpu.linear(x, rows, &l.w, l.b.as_ref(), r, act)
    }

    /// Multi-head attention from rows `[b·nq, d]` (`q` split from them) to keys and values.
    #[allow(clippy::too_many_arguments)]
    fn heads_attention(
        &self,
        gpu: &Gpu,
        q: (&Buf, usize, usize),
        kv: (&Buf, &Buf),
        bias: &Buf,
        b: usize,
        nq: usize,
        nk: usize,
        d: usize,
        heads: usize,
    ) -> Buf {
        let dh = d / heads;
        let qs = gpu.split_heads(q.0, b, nq, heads, dh, q.1, q.2);
        let o = gpu.attention(&qs, kv.0, kv.1, bias, b, heads, nq, nk);
        gpu.merge_heads(&o, b, nq, heads, dh)
    }

    /// Encode prompts (`TextEncoder::forward`), and every block's cross-attention keys and
    /// values.
    pub fn encode(&self, gpu: &Gpu, prompts: &[String]) -> Text {
        let c = &self.config().text;
        let (b, l, td) = (prompts.len(), c.max_len, c.dim);
        let (ids, lens, _) = tokenize_batch(prompts, l);
        let mut mask = vec![0f32; b * l];
        let mut bias = vec![0f32; b * l];
        for (i, &n) in lens.iter().enumerate() {
            for j in 0..l {
                if j < n {
                    mask[i * l + j] = 1.0 / n as f32;
                } else {
                    bias[i * l + j] = -1e4;
                }
            }
        }
        let mut e = vec![0f32; b * l * td];
        for (row, id) in ids.iter().enumerate() {
            let id = *id as usize;
            e[row * td..(row + 1) * td].copy_from_slice(&self.embed[id * td..(id + 1) * td]);
        }
        let e_pos: Vec<f32> = e
            .iter()
            .enumerate()
            .map(|(i, v)| v + self.text_pos[i % (l * td)])
            .collect();
        let e_pos = gpu.upload(&e_pos);
        let mut x = match &self.text_conv {
            Some((conv, k)) => {
                let cols = gpu.im2col1d(&gpu.upload(&e), b, l, td, *k);
                self.dense(gpu, &cols, b * l, conv, Some(&e_pos), Act::None)
            }
            None => e_pos,
        };
        let bias = gpu.upload(&bias);
        let rows = b * l;
        for layer in &self.text_layers {
            let h = gpu.norm_mod(&x, td, rows, &layer.norm1.0, 0, 0, LAYER_NORM_EPS);
            let qkv = self.dense(gpu, &h, rows, &layer.qkv, None, Act::None);
            let dh = td / c.heads;
            let k = gpu.split_heads(&qkv, b, l, c.heads, dh, 3 * td, td);
            let v = gpu.split_heads(&qkv, b, l, c.heads, dh, 3 * td, 2 * td);
            let o = self.heads_attention(
                gpu,
                (&qkv, 3 * td, 0),
                (&k, &v),
                &bias,
                b,
                l,
                l,
                td,
                c.heads,
            );
            x = self.dense(gpu, &o, rows, &layer.out, Some(&x), Act::None);
            let h = gpu.norm_mod(&x, td, rows, &layer.norm2.0, 0, 0, LAYER_NORM_EPS);
            let h = self.dense(gpu, &h, rows, &layer.fc1, None, Act::Gelu);
            x = self.dense(gpu, &h, rows, &layer.fc2, Some(&x), Act::None);
        }
        let tokens = gpu.norm_mod(&x, td, rows, &self.text_norm.0, 0, 0, LAYER_NORM_EPS);
        let pooled = gpu.masked_mean(&tokens, &gpu.upload(&mask), b, l);
        self.with_cross(gpu, b, tokens, bias, pooled)
    }

    /// A context from token features `[rows, L, td]`, bias `[rows, L]` and pooled `[rows, td]`
    /// (a blend of encodings), with every block's cross-attention keys and values.
    pub fn with_cross(&self, gpu: &Gpu, rows: usize, tokens: Buf, bias: Buf, pooled: Buf) -> Text {
        let c = self.config();
        let (l, d) = (c.text.max_len, c.dim);
        let dh = d / c.heads;
        let kv = self
            .blocks
            .iter()
            .map(|blk| {
                let kv = self.dense(gpu, &tokens, rows * l, &blk.cross_kv, None, Act::None);
                (
                    gpu.split_heads(&kv, rows, l, c.heads, dh, 2 * d, 0),
                    gpu.split_heads(&kv, rows, l, c.heads, dh, 2 * d, d),
                )
            })
            .collect();
        Text {
            rows,
            tokens,
            bias,
            pooled,
            kv,
        }
    }

    /// A residual conv block (`ConvBlock::forward`) on `[b, C, T, H, W]`.
    fn conv_block(
        &self,
        gpu: &Gpu,
        x: &Buf,
        b: usize,
        cond: &Buf,
        blk: &ConvBlock,
        grid: [usize; 3],
    ) -> Buf {
        let ch = blk.conv1.cin;
        let m = self.dense(gpu, cond, b, &blk.ada, None, Act::None);
        let h = gpu.group_norm_mod(x, b, ch, blk.groups, &m, true, true);
        let h = self.conv(gpu, &h, b, &blk.conv1, grid);
        gpu.silu(&h);
        let h = self.conv(gpu, &h, b, &blk.conv2, grid);
        gpu.axpby(1.0, x, 1.0, &h)
    }

    fn conv(&self, gpu: &Gpu, x: &Buf, b: usize, conv: &Conv, grid: [usize; 3]) -> Buf {
        gpu.conv(x, b, conv.cin, grid, &conv.w, &conv.b, conv.kt)
    }

    /// The preconditioned velocity `v̂(x, t)` for clips `x` `[b, 3, T, H, W]` at time `t` with
    /// the context `text` (`b` rows) — `VideoDit::forward`.
    pub fn velocity(&self, gpu: &Gpu, x: &Buf, t: f32, text: &Text) -> Buf {
        let c = self.config();
        let b = text.rows;
        let d = c.dim;
        let cs = c.stem_channels;
        let [pt, ph, pw] = c.patch;
        let clip = [c.frames, c.height, c.width];
        let grid = [c.frames / pt, c.height / ph, c.width / pw];
        let n = grid[0] * grid[1] * grid[2];
        let (c_in, c_skip, c_out) = preconditioning(t, c.sigma_data);
        let x_in = gpu.axpby(c_in, x, 0.0, x);

        // Conditioning: silu(fc2(silu(fc1(emb(t)))) + pool(text)).
        let emb = gpu.upload(&timestep_embedding(t, b));
        let h = self.dense(gpu, &emb, b, &self.t_fc1, None, Act::Silu);
        let temb = self.dense(gpu, &h, b, &self.t_fc2, None, Act::None);
        let cond = self.dense(
            gpu,
            &text.pooled,
            b,
            &self.text_pool,
            Some(&temb),
            Act::Silu,
        );

        let skip = self.stem.as_ref().map(|stem| {
            let mut f = self.conv(gpu, &x_in, b, stem, clip);
            gpu.silu(&f);
            for blk in &self.stem_blocks {
                f = self.conv_block(gpu, &f, b, &cond, blk, clip);
            }
            f
        });
        let in_ch = if cs > 0 { cs } else { 3 };
        let rows = gpu.patchify(skip.as_ref().unwrap_or(&x_in), b, in_ch, clip, c.patch);
        let mut tokens = self.dense(
            gpu,
            &rows,
            b * n,
            &self.patch,
            Some(&self.positions),
            Act::None,
        );

        for (blk, (k, v)) in self.blocks.iter().zip(&text.kv) {
            let m = self.dense(gpu, &cond, b, &blk.ada, None, Act::None); // [b, 6d]
            let y = gpu.norm_mod(&tokens, d, n, &m, 6 * d, 0, ADALN_EPS);
            let qkv = self.dense(gpu, &y, b * n, &blk.qkv, None, Act::None);
            let dh = d / c.heads;
            let ks = gpu.split_heads(&qkv, b, n, c.heads, dh, 3 * d, d);
            let vs = gpu.split_heads(&qkv, b, n, c.heads, dh, 3 * d, 2 * d);
            let none = gpu.zeros(b * n);
            let o = self.heads_attention(
                gpu,
                (&qkv, 3 * d, 0),
                (&ks, &vs),
                &none,
                b,
                n,
                n,
                d,
                c.heads,
            );
            let a = self.dense(gpu, &o, b * n, &blk.out, None, Act::None);
            tokens = gpu.gate_add(&tokens, &a, d, n, (&m, 6 * d, 2 * d));
            let y = gpu.norm_mod(&tokens, d, b * n, &blk.cross_norm.0, 0, 0, LAYER_NORM_EPS);
            let q = self.dense(gpu, &y, b * n, &blk.cross_q, None, Act::None);
            let l = c.text.max_len;
            let o = self.heads_attention(gpu, (&q, d, 0), (k, v), &text.bias, b, n, l, d, c.heads);
            tokens = self.dense(gpu, &o, b * n, &blk.cross_out, Some(&tokens), Act::None);
            let y = gpu.norm_mod(&tokens, d, n, &m, 6 * d, 3 * d, ADALN_EPS);
            let h = self.dense(gpu, &y, b * n, &blk.fc1, None, Act::Gelu);
            let h = self.dense(gpu, &h, b * n, &blk.fc2, None, Act::None);
            tokens = gpu.gate_add(&tokens, &h, d, n, (&m, 6 * d, 5 * d));
        }
        let m = self.dense(gpu, &cond, b, &self.final_ada, None, Act::None);
        let y = gpu.norm_mod(&tokens, d, n, &m, 2 * d, 0, ADALN_EPS);
        let out = self.dense(gpu, &y, b * n, &self.final_proj, None, Act::None);
        let f = match (skip, &self.head1, &self.head2) {
            (Some(skip), Some(h1), Some(h2)) => {
                let plane = clip.iter().product::<usize>();
                let cat = gpu.alloc(b * 2 * cs * plane);
                gpu.unpatchify_into(&out, &cat, b, cs, 2 * cs, clip, c.patch);
                gpu.copy(
                    &skip,
                    &cat,
                    b,
                    cs * plane,
                    (cs * plane, 0),
                    (2 * cs * plane, cs * plane),
                );
                let mut hidden = self.conv(gpu, &cat, b, h1, clip);
                if let Some(ada) = &self.head_ada {
                    let m = self.dense(gpu, &cond, b, ada, None, Act::None);
                    hidden = gpu.group_norm_mod(&hidden, b, cs, cs, &m, false, false);
                }
                for blk in &self.head_blocks {
                    hidden = self.conv_block(gpu, &hidden, b, &cond, blk, clip);
                }
                gpu.silu(&hidden);
                self.conv(gpu, &hidden, b, h2, clip)
            }
            _ => {
                let f = gpu.alloc(x.len);
                gpu.unpatchify_into(&out, &f, b, 3, 3, clip, c.patch);
                f
            }
        };
        match c.prediction {
            Prediction::Velocity => gpu.axpby(c_skip, x, c_out, &f),
            Prediction::Clean => {
                let tc = t.max(flick_core::model::CLEAN_T_MIN);
                gpu.axpby(1.0 / tc, x, -1.0 / tc, &f)
            }
        }
    }
}

/// `layers::timestep_embedding` of `t` for `b` rows: `[cos(1000·t·f_i)…, sin(1000·t·f_i)…]`,
/// 256 wide, in f32 as burn computes it.
fn timestep_embedding(t: f32, b: usize) -> Vec<f32> {
    let half = 128;
    let args: Vec<f32> = (0..half)
        .map(|i| (t * 1000.0) * (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let row: Vec<f32> = args
        .iter()
        .map(|a| a.cos())
        .chain(args.iter().map(|a| a.sin()))
        .collect();
    row.repeat(b)
}
