// Fused attention forward: o = softmax(q·kᵀ·scale + bias)·v, one pass over the keys with an
// online softmax (FlashAttention's recurrence): no [Nq, Nk] matrix is ever stored. Each
// invocation owns one query row; a workgroup of 64 shares key/value tiles of 32 rows through
// workgroup memory. Also writes lse = log Σ exp(scores) per query for the backward pass.
//
// q: [BH, Nq, DH]; k, v: [BH, Nk, DH]; bias: [B, Nk] (additive, per key; BH = B·heads);
// o: [BH, Nq, DH]; lse: [BH, Nq]. p: BH, heads, Nq, Nk, scale (f32 bits), query tiles.

const DH: u32 = {{ dh }}u;
const BQ: u32 = 64u;
const BK: u32 = {{ bk }}u; // keys per tile (BK·DH·4 bytes ≤ 8 KiB: two tiles fit WebGPU's 16 KiB)

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> p: array<u32>;

var<workgroup> ks: array<f32, BK * DH>;
var<workgroup> vs: array<f32, BK * DH>;
var<workgroup> bs: array<f32, BK>;

// The parameters, made uniform for the barriers below: values read from a read_write buffer are
// not uniform in WGSL's analysis (browsers refuse barriers that depend on them).
var<workgroup> wp: array<u32, 8>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        for (var i = 0u; i < 8u; i = i + 1u) { wp[i] = p[i]; }
    }
    let pw = workgroupUniformLoad(&wp);
    let bhn = pw[0];
    let heads = pw[1];
    let nq = pw[2];
    let nk = pw[3];
    let scale = bitcast<f32>(pw[4]);
    let qtiles = pw[5];
    let w = wg.x + wg.y * nwg.x;
    if (w >= bhn * qtiles) { return; }
    let bh = w / qtiles;
    let b = bh / heads;
    let qi = (w % qtiles) * BQ + lid;
    let live = qi < nq;

    var qr: array<f32, DH>;
    var acc: array<f32, DH>;
    if (live) {
        for (var d = 0u; d < DH; d = d + 1u) { qr[d] = q[(bh * nq + qi) * DH + d] * scale; }
    }
    var m = -1e30;
    var l = 0.0;
    let ntiles = (nk + BK - 1u) / BK;
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let k0 = t * BK;
        for (var e = lid; e < BK * DH; e = e + BQ) {
            let j = k0 + e / DH;
            if (j < nk) {
                let src = (bh * nk + j) * DH + e % DH;
                ks[e] = k[src];
                vs[e] = v[src];
            } else {
                ks[e] = 0.0;
                vs[e] = 0.0;
            }
        }
        if (lid < BK) {
            let j = k0 + lid;
            bs[lid] = select(-1e30, bias[b * nk + min(j, nk - 1u)], j < nk);
        }
        workgroupBarrier();
        if (live) {
            var s: array<f32, BK>;
            var tmax = m;
            for (var j = 0u; j < BK; j = j + 1u) {
                var dot = 0.0;
                for (var d = 0u; d < DH; d = d + 1u) { dot = dot + qr[d] * ks[j * DH + d]; }
                s[j] = dot + bs[j];
                tmax = max(tmax, s[j]);
            }
            let corr = exp(m - tmax);
            l = l * corr;
            for (var d = 0u; d < DH; d = d + 1u) { acc[d] = acc[d] * corr; }
            for (var j = 0u; j < BK; j = j + 1u) {
                let pj = exp(s[j] - tmax);
                l = l + pj;
                for (var d = 0u; d < DH; d = d + 1u) { acc[d] = acc[d] + pj * vs[j * DH + d]; }
            }
            m = tmax;
        }
        workgroupBarrier();
    }
    if (live) {
        let inv = 1.0 / l;
        for (var d = 0u; d < DH; d = d + 1u) { o[(bh * nq + qi) * DH + d] = acc[d] * inv; }
        lse[bh * nq + qi] = m + log(l);
    }
}
