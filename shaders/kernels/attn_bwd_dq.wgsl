// Fused attention backward, query gradient (FlashAttention-2's loop over keys for each query):
//   p_ij = exp(scale·q_i·k_j + bias_j − lse_i),  ds_ij = p_ij·(do_i·v_j − D_i),
//   dq_i = scale·Σ_j ds_ij·k_j.
// As in the forward, a workgroup takes BQ = 64/S queries, the S invocations of a query each take
// every S-th key of the key/value tiles shared through workgroup memory, and their partial sums
// are added at the end.
//
// q, dout, dq: [BH, Nq, DH]; k, v: [BH, Nk, DH]; bias: [B, Nk]; ld: [2, BH, Nq] (lse, then D).
// p: BH, heads, Nq, Nk, scale (f32 bits), query tiles, il (1: q, k, v,
// dout and dq with their heads interleaved; see row4).

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
@group(0) @binding(4) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ld: array<f32>; // [2, BH, Nq]: lse, then D
@group(0) @binding(6) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> p: array<u32>;

var<workgroup> ks: array<vec4<f32>, BK * D4>;
var<workgroup> vs: array<vec4<f32>, BK * D4>;
var<workgroup> bs: array<f32, BK>;

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
    let ql = lid % BQ;
    let sp = lid / BQ;
    let qi = (w % qtiles) * BQ + ql;
    let live = qi < nq;

    var qr: array<vec4<f32>, D4>;
    var dor: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    var li = 0.0;
    var di = 0.0;
    if (live) {
        for (var d = 0u; d < D4; d = d + 1u) {
            qr[d] = q[row4(bh, qi, nq, heads, il) + d];
            dor[d] = dout[row4(bh, qi, nq, heads, il) + d];
        }
        li = ld[bh * nq + qi];
        di = ld[bhn * nq + bh * nq + qi];
    }
    let ntiles = (nk + BK - 1u) / BK;
    for (var t = 0u; t < ntiles; t = t + 1u) {
        load_kv_tile(t * BK, bh, b, nk, lid, heads, il);
        workgroupBarrier();
        if (live) {
            for (var jj = 0u; jj < KS; jj = jj + 1u) {
                let j = jj * S + sp;
                var s = vec4<f32>();
                var dp = vec4<f32>();
                for (var d = 0u; d < D4; d = d + 1u) {
                    s = s + qr[d] * ks[j * D4 + d];
                    dp = dp + dor[d] * vs[j * D4 + d];
                }
                let pij = exp((s.x + s.y + s.z + s.w) * scale + bs[j] - li);
                let dsij = pij * (dp.x + dp.y + dp.z + dp.w - di);
                for (var d = 0u; d < D4; d = d + 1u) { acc[d] = acc[d] + dsij * ks[j * D4 + d]; }
            }
        }
        workgroupBarrier();
    }

    // Add the S partial sums of each query.
    add_splits(&acc, ql, sp);
    if (live && sp == 0u) {
        for (var d = 0u; d < D4; d = d + 1u) { dq[row4(bh, qi, nq, heads, il) + d] = acc[d] * scale; }
    }
}
