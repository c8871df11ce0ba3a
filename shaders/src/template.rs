// Shared by the crate and its build script (which validates every instantiation with naga).

/// The kernels, by name, with their WGSL text (templates: `{{ dh }}`, `{{ bk }}`).
pub const KERNELS: &[(&str, &str)] = &[
    ("adaln_fwd", include_str!("../kernels/adaln_fwd.wgsl")),
    ("adaln_bwd_dx", include_str!("../kernels/adaln_bwd_dx.wgsl")),
    ("adaln_bwd_mod", include_str!("../kernels/adaln_bwd_mod.wgsl")),
    ("clip_pixels", include_str!("../kernels/clip_pixels.wgsl")),
    ("attn_fwd", include_str!("../kernels/attn_fwd.wgsl")),
    ("attn_bwd_dq", include_str!("../kernels/attn_bwd_dq.wgsl")),
    ("attn_bwd_dkdv", include_str!("../kernels/attn_bwd_dkdv.wgsl")),
];

/// `workgroup_sum`, prepended to the kernels that call it.
pub const REDUCE: &str = include_str!("../kernels/reduce.wgsl");

/// Head widths the attention kernels are built for (a head's row lives in registers).
pub const HEAD_DIMS: &[u32] = &[8, 16, 32, 64];

/// Rows of a key/query tile in workgroup memory for head width `dh`: two tiles of
/// `tile·dh` f32 stay within 8 KiB, half of WebGPU's guaranteed 16 KiB.
pub const fn attention_tile(dh: u32) -> u32 {
    if dh <= 32 { 32 } else { 16 }
}

/// The WGSL text of kernel `src` for head width `dh` (ignored by kernels without `{{ dh }}`),
/// with the shared reduction prepended where it is used.
pub fn instantiate(src: &str, dh: u32) -> String {
    let src = if src.contains("workgroup_sum(") { format!("{REDUCE}{src}") } else { src.to_string() };
    src.replace("{{ dh }}", &dh.to_string()).replace("{{ bk }}", &attention_tile(dh).to_string())
}
