// Layer norm over the last dimension, then a modulation:
//   y = (x − mean)·rstd·(1 + scale) + shift,  rstd = 1/sqrt(var + eps),
//   shift = m[s·mstride + off + i], scale = m[s·mstride + off + d + i], s = row / n (the sample).
// DiT's adaLN with m the conditioning's modulation [B, k·d] (off picks the chunk pair); a plain
// affine layer norm with m = [β, γ − 1] and mstride 0. One workgroup per row (forward only: the
// inference engine's; adaln_fwd.wgsl is the training path's, with statistics for the backward).
//
// x, y: [rows, d]. p: rows, n (rows per sample), d, eps (f32 bits), mstride, off.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let rows = pw[0];
    let n = pw[1];
    let d = pw[2];
    let eps = bitcast<f32>(pw[3]);
    let mstride = pw[4];
    let off = pw[5];
    let row = wg.x + wg.y * nwg.x;
    if (row >= rows) { return; }
    let base = row * d;
    let mb = (row / n) * mstride + off;

    var s = 0.0;
    for (var i = lid; i < d; i = i + WG) { s = s + x[base + i]; }
    let mean = workgroup_sum(s, lid) / f32(d);
    var s2 = 0.0;
    for (var i = lid; i < d; i = i + WG) {
        let c = x[base + i] - mean;
        s2 = s2 + c * c;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(s2, lid) / f32(d) + eps);
    for (var i = lid; i < d; i = i + WG) {
        y[base + i] = (x[base + i] - mean) * rstd * (1.0 + m[mb + d + i]) + m[mb + i];
    }
}
