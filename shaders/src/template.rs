// Shared by the crate and its build script (which validates every instantiation with naga).

/// The kernels, by name, with their WGSL text (templates: `{{ dh }}`, `{{ bk }}`, `{{ splits }}`,
/// `{{ kt }}`; see [`Variant`]).
pub const KERNELS: &[(&str, &str)] = &[
    ("adaln_fwd", include_str!("../kernels/adaln_fwd.wgsl")),
    ("adaln_bwd_dx", include_str!("../kernels/adaln_bwd_dx.wgsl")),
    (
        "adaln_bwd_mod",
        include_str!("../kernels/adaln_bwd_mod.wgsl"),
    ),
    ("clip_pixels", include_str!("../kernels/clip_pixels.wgsl")),
    ("attn_fwd", include_str!("../kernels/attn_fwd.wgsl")),
    ("attn_bwd_dq", include_str!("../kernels/attn_bwd_dq.wgsl")),
    (
        "attn_bwd_dkdv",
        include_str!("../kernels/attn_bwd_dkdv.wgsl"),
    ),
    (
        "attn_bwd_prep",
        include_str!("../kernels/attn_bwd_prep.wgsl"),
    ),
    ("conv_fwd", include_str!("../kernels/conv_fwd.wgsl")),
    ("conv_bwd_w", include_str!("../kernels/conv_bwd_w.wgsl")),
    ("silu_fb", include_str!("../kernels/silu_fb.wgsl")),
    ("row_norm_fwd", include_str!("../kernels/row_norm_fwd.wgsl")),
    ("row_norm_bwd", include_str!("../kernels/row_norm_bwd.wgsl")),
    ("adamw", include_str!("../kernels/adamw.wgsl")),
    ("sumsq", include_str!("../kernels/sumsq.wgsl")),
    // The inference engine's (flick-direct): the rest of a DiT's forward pass.
    ("linear", include_str!("../kernels/linear.wgsl")),
    ("norm_mod", include_str!("../kernels/norm_mod.wgsl")),
    (
        "group_norm_mod",
        include_str!("../kernels/group_norm_mod.wgsl"),
    ),
    ("axpby", include_str!("../kernels/axpby.wgsl")),
    ("silu", include_str!("../kernels/silu.wgsl")),
    ("gate_add", include_str!("../kernels/gate_add.wgsl")),
    ("heads", include_str!("../kernels/heads.wgsl")),
    ("patchify", include_str!("../kernels/patchify.wgsl")),
    ("unpatchify", include_str!("../kernels/unpatchify.wgsl")),
    ("copy", include_str!("../kernels/copy.wgsl")),
    ("im2col1d", include_str!("../kernels/im2col1d.wgsl")),
    ("masked_mean", include_str!("../kernels/masked_mean.wgsl")),
];

/// The template values of one instantiation of a kernel (those it does not use are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Attention head width (`{{ dh }}`; the tile, `{{ bk }}`, follows from it).
    pub dh: u32,
    /// Attention invocations per row (`{{ splits }}`).
    pub splits: u32,
    /// Temporal size of a convolution kernel (`{{ kt }}`; the spatial size is 3×3).
    pub kt: u32,
}

impl Variant {
    /// For kernels without templates.
    pub const PLAIN: Variant = Variant {
        dh: 0,
        splits: 1,
        kt: 1,
    };

    pub const fn attention(dh: u32, splits: u32) -> Variant {
        Variant { dh, splits, kt: 1 }
    }

    pub const fn conv(kt: u32) -> Variant {
        Variant {
            dh: 0,
            splits: 1,
            kt,
        }
    }
}

/// Temporal kernel sizes the convolution kernels are built for (kernels `kt×3×3`).
pub const CONV_KT: &[u32] = &[1, 3];

/// Every valid instantiation of kernel `src` (what the build script validates).
pub fn variants(src: &str) -> Vec<Variant> {
    let dhs: &[u32] = if src.contains("{{ dh }}") {
        HEAD_DIMS
    } else {
        &[0]
    };
    let splits: &[u32] = if src.contains("{{ splits }}") {
        SPLITS
    } else {
        &[1]
    };
    let kts: &[u32] = if src.contains("{{ kt }}") {
        CONV_KT
    } else {
        &[1]
    };
    let mut out = Vec::new();
    for &dh in dhs {
        for &s in splits.iter().filter(|&&s| splits_valid(dh, s)) {
            for &kt in kts {
                out.push(Variant { dh, splits: s, kt });
            }
        }
    }
    out
}

/// `workgroup_sum`, prepended to the kernels that call it.
pub const REDUCE: &str = include_str!("../kernels/reduce.wgsl");

/// `load_params`, prepended to the kernels that call it.
pub const PARAMS: &str = include_str!("../kernels/params.wgsl");

/// `row4` (attention: where a row of a head starts, heads stacked or interleaved), prepended to
/// the kernels that call it.
pub const ATTENTION_ROWS: &str = include_str!("../kernels/attn_rows.wgsl");

/// `load_kv_tile` and `add_splits` (attention), prepended to the kernels that call them.
pub const ATTENTION_COMMON: &str = include_str!("../kernels/attn_common.wgsl");

/// Head widths the attention kernels are built for (a head's row lives in registers, as vec4s).
pub const HEAD_DIMS: &[u32] = &[8, 16, 32, 64];

/// Invocations per row the attention kernels can be built with (see [`attention_splits`]).
pub const SPLITS: &[u32] = &[1, 2, 4, 8];

/// Rows of a key/query tile in workgroup memory for head width `dh`: two tiles of
/// `tile·dh` f32 stay within 8 KiB, half of WebGPU's guaranteed 16 KiB.
pub const fn attention_tile(dh: u32) -> u32 {
    if dh <= 32 { 32 } else { 16 }
}

/// Whether the attention kernels can be built with `splits` invocations per row at head width
/// `dh`: the tile divides among them, and the merge of their partial results, which goes
/// through a tile, fits (64/splits rows per workgroup ≤ tile rows).
pub const fn splits_valid(dh: u32, splits: u32) -> bool {
    splits == 1 || (attention_tile(dh).is_multiple_of(splits) && 64 / splits <= attention_tile(dh))
}

/// Workgroups an attention launch should have to fill a large GPU (an H200 runs 132 × 16
/// workgroups of 64 at once); fewer, and rows are split among more invocations.
pub const ATTENTION_TARGET_WORKGROUPS: usize = 2048;

/// Invocations per row for an attention launch over `heads` (batch × heads) of `rows` rows
/// (queries, or keys for the key/value gradient): the fewest that still give
/// [`ATTENTION_TARGET_WORKGROUPS`] workgroups, at most 8. Each invocation of a row then takes
/// every `splits`-th key (query) of a tile and the partial results are merged in workgroup
/// memory: flash-decoding's split within a workgroup, for short sequences and small batches.
pub fn attention_splits(dh: u32, heads: usize, rows: usize) -> u32 {
    for &s in SPLITS {
        if splits_valid(dh, s)
            && heads * rows.div_ceil(64 / s as usize) >= ATTENTION_TARGET_WORKGROUPS
        {
            return s;
        }
    }
    8
}

/// The WGSL text of kernel `src` for the template values `v`, with the shared helpers prepended
/// where they are used.
pub fn instantiate(src: &str, v: Variant) -> String {
    let mut text = String::new();
    if src.contains("load_params(") {
        text.push_str(PARAMS);
    }
    if src.contains("workgroup_sum(") {
        text.push_str(REDUCE);
    }
    if src.contains("row4(") {
        text.push_str(ATTENTION_ROWS);
    }
    if src.contains("add_splits(") || src.contains("load_kv_tile(") {
        text.push_str(ATTENTION_COMMON);
    }
    text.push_str(src);
    text.replace("{{ dh }}", &v.dh.to_string())
        .replace("{{ bk }}", &attention_tile(v.dh).to_string())
        .replace("{{ splits }}", &v.splits.to_string())
        .replace("{{ kt }}", &v.kt.to_string())
}
