// Fused attention backward, key and value gradients (FlashAttention-2's outer loop over keys):
// each key row walks all queries in tiles held in workgroup memory, recomputing the
// probabilities from the forward's lse instead of storing them:
//   p_ij = exp(scale·q_i·k_j + bias_j − lse_i),  dv_j = Σ_i p_ij·do_i,
//   ds_ij = p_ij·(do_i·v_j − D_i),              dk_j = scale·Σ_i ds_ij·q_i,
// where D_i = do_i·o_i (computed beforehand). No atomics: dq is a separate kernel. A workgroup
// takes BKEYS = 64/S keys; the S invocations of a key each take every S-th query of a tile and
// their partial sums are added at the end.
//
// q, dout: [BH, Nq, DH]; k, v: [BH, Nk, DH]; bias: [B, Nk]; ld: [2, BH, Nq] (lse, then D);
// dkv: [2, BH, Nk, DH] (dk, then dv). p: BH, heads, Nq, Nk, scale (f32 bits), key tiles, il (1:
// q, k, v, dout and each half of dkv with their heads interleaved; see row4), where dv starts in
// dkv (elements, a multiple of 4).

const DH: u32 = {{ dh }}u;
const D4: u32 = DH / 4u;
const S: u32 = {{ splits }}u; // invocations per key
const BKEYS: u32 = 64u / S; // keys per workgroup
const BQ: u32 = {{ bk }}u; // queries per tile (BQ·DH·4 bytes ≤ 8 KiB)
const QS: u32 = BQ / S; // queries of a tile per invocation

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ld: array<f32>; // [2, BH, Nq]: lse, then D
@group(0) @binding(6) var<storage, read_write> dkv: array<vec4<f32>>; // dk then dv
@group(0) @binding(7) var<storage, read_write> p: array<u32>;

var<workgroup> qs: array<vec4<f32>, BQ * D4>;
var<workgroup> dos: array<vec4<f32>, BQ * D4>;
var<workgroup> ls: array<f32, BQ>;
var<workgroup> ds: array<f32, BQ>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let bhn = pw[0];
    let heads = pw[1];
    let nq = pw[2];
    let nk = pw[3];
    let scale = bitcast<f32>(pw[4]);
    let ktiles = pw[5];
    let il = pw[6];
    let w = wg.x + wg.y * nwg.x;
    if (w >= bhn * ktiles) { return; }
    let bh = w / ktiles;
    let b = bh / heads;
    let kl = lid % BKEYS;
    let sp = lid / BKEYS;
    let kj = (w % ktiles) * BKEYS + kl;
    let live = kj < nk;

    var kr: array<vec4<f32>, D4>;
    var vr: array<vec4<f32>, D4>;
    var dk: array<vec4<f32>, D4>;
    var dv: array<vec4<f32>, D4>;
    var bj = 0.0;
    if (live) {
        for (var d = 0u; d < D4; d = d + 1u) {
            kr[d] = k[row4(bh, kj, nk, heads, il) + d];
            vr[d] = v[row4(bh, kj, nk, heads, il) + d];
        }
        bj = bias[b * nk + kj];
    }
    let ntiles = (nq + BQ - 1u) / BQ;
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let q0 = t * BQ;
        for (var e = lid; e < BQ * D4; e = e + 64u) {
            let i = q0 + e / D4;
            if (i < nq) {
                let src = row4(bh, i, nq, heads, il) + e % D4;
                qs[e] = q[src];
                dos[e] = dout[src];
            } else {
                qs[e] = vec4<f32>();
                dos[e] = vec4<f32>();
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
            for (var ii = 0u; ii < QS; ii = ii + 1u) {
                let i = ii * S + sp;
                var s = vec4<f32>();
                var dp = vec4<f32>();
                for (var d = 0u; d < D4; d = d + 1u) {
                    s = s + qs[i * D4 + d] * kr[d];
                    dp = dp + dos[i * D4 + d] * vr[d];
                }
                let pij = exp((s.x + s.y + s.z + s.w) * scale + bj - ls[i]);
                let dsij = pij * (dp.x + dp.y + dp.z + dp.w - ds[i]);
                for (var d = 0u; d < D4; d = d + 1u) {
                    dv[d] = dv[d] + pij * dos[i * D4 + d];
                    dk[d] = dk[d] + dsij * qs[i * D4 + d];
                }
            }
        }
        workgroupBarrier();
    }

    // Add the S partial sums of each key (through the tiles: BQ ≥ BKEYS rows).
    for (var r = 1u; r < S; r = r + 1u) {
        if (sp == r) {
            for (var d = 0u; d < D4; d = d + 1u) {
                qs[kl * D4 + d] = dk[d];
                dos[kl * D4 + d] = dv[d];
            }
        }
        workgroupBarrier();
        if (sp == 0u) {
            for (var d = 0u; d < D4; d = d + 1u) {
                dk[d] = dk[d] + qs[kl * D4 + d];
                dv[d] = dv[d] + dos[kl * D4 + d];
            }
        }
        workgroupBarrier();
    }
    if (live && sp == 0u) {
        let half = pw[7] / 4u; // where dv starts (elements; aligned for a storage binding)
        for (var d = 0u; d < D4; d = d + 1u) {
            dkv[row4(bh, kj, nk, heads, il) + d] = dk[d] * scale;
            dkv[half + row4(bh, kj, nk, heads, il) + d] = dv[d];
        }
    }
}
