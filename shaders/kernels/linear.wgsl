// Dense layer: y = act(x·w + bias + r). x: [M, K]; w: [K, N] (burn's Linear layout: input rows,
// output columns); bias: [N]; r: an addend read cyclically, r[(m·N + n) mod rlen] (a residual
// [M, N], or position codes [tokens, N] repeated over the batch). A workgroup of 64 computes a
// 32×32 tile of y, 4×4 outputs per invocation, walking K in slices of 32 staged in workgroup
// memory. The activation comes last: silu(temb + pool(text)) is one launch.
//
// p: M, K, N, flags (1: bias, 2: r), act (0: none, 1: GELU (erf), 2: SiLU), rlen.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> r: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> p: array<u32>;

const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 32u;

var<workgroup> xs: array<f32, 1024>; // TM·TK
var<workgroup> ws: array<f32, 1024>; // TK·TN

// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7).
fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let m = pw[0];
    let k = pw[1];
    let n = pw[2];
    let flags = pw[3];
    let act = pw[4];
    let rlen = pw[5];
    let tiles_n = (n + TN - 1u) / TN;
    let tile = wg.x + wg.y * nwg.x;
    if (tile >= ((m + TM - 1u) / TM) * tiles_n) { return; }
    let row0 = (tile / tiles_n) * TM;
    let col0 = (tile % tiles_n) * TN;
    let tr = (lid / 8u) * 4u;
    let tc = (lid % 8u) * 4u;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k; k0 = k0 + TK) {
        for (var e = lid; e < TM * TK; e = e + 64u) {
            let gr = row0 + e / TK;
            let gk = k0 + e % TK;
            var v = 0.0;
            if (gr < m && gk < k) { v = x[gr * k + gk]; }
            xs[e] = v;
        }
        for (var e = lid; e < TK * TN; e = e + 64u) {
            let gk = k0 + e / TN;
            let gc = col0 + e % TN;
            var v = 0.0;
            if (gk < k && gc < n) { v = w[gk * n + gc]; }
            ws[e] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            let o = kk * TN + tc;
            let b = vec4<f32>(ws[o], ws[o + 1u], ws[o + 2u], ws[o + 3u]);
            for (var i = 0u; i < 4u; i = i + 1u) {
                acc[i] = acc[i] + xs[(tr + i) * TK + kk] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let row = row0 + tr + i;
        if (row >= m) { break; }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let col = col0 + tc + j;
            if (col >= n) { break; }
            var v = acc[i][j];
            if ((flags & 1u) != 0u) { v = v + bias[col]; }
            if ((flags & 2u) != 0u) { v = v + r[(row * n + col) % rlen]; }
            if (act == 1u) {
                v = 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
            } else if (act == 2u) {
                v = v / (1.0 + exp(-v));
            }
            y[row * n + col] = v;
        }
    }
}
