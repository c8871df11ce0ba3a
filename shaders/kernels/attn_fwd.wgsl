// Fused attention forward: o = softmax(q·kᵀ·scale + bias)·v, one pass over the keys with an
// online softmax (FlashAttention's recurrence): no [Nq, Nk] matrix is ever stored. A workgroup
// of 64 invocations takes BQ = 64/S queries; the S invocations of a query each take every S-th
// key of the key/value tiles shared through workgroup memory (flash-decoding's split, inside
// the workgroup: S times more workgroups for short sequences and small batches), and their S
// partial softmaxes are merged at the end. Rows are vec4s in registers (constant-bound loops).
// Also writes lse = log Σ exp(scores) per query for the backward pass.
//
// q: [BH, Nq, DH]; k, v: [BH, Nk, DH]; bias: [B, Nk] (additive, per key; BH = B·heads);
// o: [BH, Nq, DH]; lse: [BH, Nq]. p: BH, heads, Nq, Nk, scale (f32 bits), query tiles,
// il (1: q, k, v and o with their heads interleaved, [B, N, heads, DH]; see row4).

const DH: u32 = {{ dh }}u;
const D4: u32 = DH / 4u;
const S: u32 = {{ splits }}u; // invocations per query
const BQ: u32 = 64u / S; // queries per workgroup
const BK: u32 = {{ bk }}u; // keys per tile (BK·DH·4 bytes ≤ 8 KiB: two tiles fit WebGPU's 16 KiB)
const KS: u32 = BK / S; // keys of a tile per invocation

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> p: array<u32>;

var<workgroup> ks: array<vec4<f32>, BK * D4>;
var<workgroup> vs: array<vec4<f32>, BK * D4>;
var<workgroup> bs: array<f32, BK>;
var<workgroup> cm: array<f32, 64>;
var<workgroup> cl: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let bhn = pw[0];
    let heads = pw[1];
    let nq = pw[2];
    let nk = pw[3];
    let scale = bitcast<f32>(pw[4]);
    let qtiles = pw[5];
    let il = pw[6];
    let w = wg.x + wg.y * nwg.x;
    if (w >= bhn * qtiles) { return; }
    let bh = w / qtiles;
    let b = bh / heads;
    // Neighbouring invocations take neighbouring queries and the same keys (broadcast reads).
    let ql = lid % BQ;
    let sp = lid / BQ;
    let qi = (w % qtiles) * BQ + ql;
    let live = qi < nq;

    var qr: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    if (live) {
        for (var d = 0u; d < D4; d = d + 1u) { qr[d] = q[row4(bh, qi, nq, heads, il) + d] * scale; }
    }
    var m = -1e30;
    var l = 0.0;
    let ntiles = (nk + BK - 1u) / BK;
    for (var t = 0u; t < ntiles; t = t + 1u) {
        load_kv_tile(t * BK, bh, b, nk, lid, heads, il);
        workgroupBarrier();
        if (live) {
            var s: array<f32, KS>;
            var tmax = m;
            for (var jj = 0u; jj < KS; jj = jj + 1u) {
                let j = jj * S + sp;
                var dot = vec4<f32>();
                for (var d = 0u; d < D4; d = d + 1u) { dot = dot + qr[d] * ks[j * D4 + d]; }
                s[jj] = dot.x + dot.y + dot.z + dot.w + bs[j];
                tmax = max(tmax, s[jj]);
            }
            let corr = exp(m - tmax);
            l = l * corr;
            for (var d = 0u; d < D4; d = d + 1u) { acc[d] = acc[d] * corr; }
            for (var jj = 0u; jj < KS; jj = jj + 1u) {
                let j = jj * S + sp;
                let pj = exp(s[jj] - tmax);
                l = l + pj;
                for (var d = 0u; d < D4; d = d + 1u) { acc[d] = acc[d] + pj * vs[j * D4 + d]; }
            }
            m = tmax;
        }
        workgroupBarrier();
    }

    // Merge the S partial softmaxes of each query: common maximum, rescaled sums.
    cm[lid] = m;
    cl[lid] = l;
    workgroupBarrier();
    var mx = -1e30;
    for (var r = 0u; r < S; r = r + 1u) { mx = max(mx, cm[r * BQ + ql]); }
    var lt = 0.0;
    for (var r = 0u; r < S; r = r + 1u) { lt = lt + cl[r * BQ + ql] * exp(cm[r * BQ + ql] - mx); }
    let own = exp(m - mx);
    for (var d = 0u; d < D4; d = d + 1u) { acc[d] = acc[d] * own; }
    add_splits(&acc, ql, sp);
    if (live && sp == 0u) {
        let inv = 1.0 / lt;
        for (var d = 0u; d < D4; d = d + 1u) { o[row4(bh, qi, nq, heads, il) + d] = acc[d] * inv; }
        lse[bh * nq + qi] = mx + log(lt);
    }
}
