// Fused attention backward, key and value gradients (FlashAttention-2's outer loop over keys):
// each invocation owns one key row j and walks all queries in tiles of 32 held in workgroup
// memory, recomputing the probabilities from the forward's lse instead of storing them:
//   p_ij = exp(scale·q_i·k_j + bias_j − lse_i),  dv_j = Σ_i p_ij·do_i,
//   ds_ij = p_ij·(do_i·v_j − D_i),              dk_j = scale·Σ_i ds_ij·q_i,
// where D_i = do_i·o_i (computed beforehand). No atomics: dq is a separate kernel.
//
// q, dout: [BH, Nq, DH]; k, v, dk, dv: [BH, Nk, DH]; bias: [B, Nk]; ld: [2, BH, Nq] (lse, then D).
// p: BH, heads, Nq, Nk, scale (f32 bits), key tiles.

const DH: u32 = {{ dh }}u;
const BKEYS: u32 = 64u;
const BQ: u32 = {{ bk }}u; // queries per tile (BQ·DH·4 bytes ≤ 8 KiB)

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> ld: array<f32>; // [2, BH, Nq]: lse, then D
@group(0) @binding(6) var<storage, read_write> dkv: array<f32>; // dk then dv: [2, BH, Nk, DH]
@group(0) @binding(7) var<storage, read_write> p: array<u32>;

var<workgroup> qs: array<f32, BQ * DH>;
var<workgroup> dos: array<f32, BQ * DH>;
var<workgroup> ls: array<f32, BQ>;
var<workgroup> ds: array<f32, BQ>;

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
    let ktiles = pw[5];
    let w = wg.x + wg.y * nwg.x;
    if (w >= bhn * ktiles) { return; }
    let bh = w / ktiles;
    let b = bh / heads;
    let kj = (w % ktiles) * BKEYS + lid;
    let live = kj < nk;

    var kr: array<f32, DH>;
    var vr: array<f32, DH>;
    var dk: array<f32, DH>;
    var dv: array<f32, DH>;
    var bj = 0.0;
    if (live) {
        for (var d = 0u; d < DH; d = d + 1u) {
            kr[d] = k[(bh * nk + kj) * DH + d];
            vr[d] = v[(bh * nk + kj) * DH + d];
        }
        bj = bias[b * nk + kj];
    }
    let ntiles = (nq + BQ - 1u) / BQ;
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let q0 = t * BQ;
        for (var e = lid; e < BQ * DH; e = e + BKEYS) {
            let i = q0 + e / DH;
            if (i < nq) {
                let src = (bh * nq + i) * DH + e % DH;
                qs[e] = q[src];
                dos[e] = dout[src];
            } else {
                qs[e] = 0.0;
                dos[e] = 0.0;
            }
        }
        if (lid < BQ) {
            let i = q0 + lid;
            // A query past the end gets lse = +huge: p = 0, so it adds nothing.
            ls[lid] = select(1e30, ld[bh * nq + min(i, nq - 1u)], i < nq);
            ds[lid] = select(0.0, ld[bhn * nq + bh * nq + min(i, nq - 1u)], i < nq);
        }
        workgroupBarrier();
        if (live) {
            for (var i = 0u; i < BQ; i = i + 1u) {
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < DH; d = d + 1u) {
                    s = s + qs[i * DH + d] * kr[d];
                    dp = dp + dos[i * DH + d] * vr[d];
                }
                let pij = exp(s * scale + bj - ls[i]);
                let dsij = pij * (dp - ds[i]);
                for (var d = 0u; d < DH; d = d + 1u) {
                    dv[d] = dv[d] + pij * dos[i * DH + d];
                    dk[d] = dk[d] + dsij * qs[i * DH + d];
                }
            }
        }
        workgroupBarrier();
    }
    if (live) {
        let half = bhn * nk * DH;
        for (var d = 0u; d < DH; d = d + 1u) {
            dkv[(bh * nk + kj) * DH + d] = dk[d] * scale;
            dkv[half + (bh * nk + kj) * DH + d] = dv[d];
        }
    }
}
