// Shared by the attention kernels that walk the keys in tiles `ks`, `vs`, `bs` of BK rows and
// split each query row among S invocations (instantiate() prepends it to every kernel that calls
// load_kv_tile or add_splits).

// Keys and values k0 .. k0+BK of head bh into `ks`, `vs` (zeros past the end), their biases into
// `bs` (−1e30 past the end: no weight). The caller puts a barrier after it.
fn load_kv_tile(k0: u32, bh: u32, b: u32, nk: u32, lid: u32, heads: u32, il: u32) {
    for (var e = lid; e < BK * D4; e = e + 64u) {
        let j = k0 + e / D4;
        if (j < nk) {
            let src = row4(bh, j, nk, heads, il) + e % D4;
            ks[e] = k[src];
            vs[e] = v[src];
        } else {
            ks[e] = vec4<f32>();
            vs[e] = vec4<f32>();
        }
    }
    if (lid < BK) {
        let j = k0 + lid;
        bs[lid] = select(-1e30, bias[b * nk + min(j, nk - 1u)], j < nk);
    }
}

// Adds the S partial sums `acc` of each row into the invocation of split 0, through `ks` (the
// tiles are free by then; ks holds at least BQ·D4 vec4s). Call it from uniform control flow (it
// has barriers).
fn add_splits(acc: ptr<function, array<vec4<f32>, D4>>, ql: u32, sp: u32) {
    for (var r = 1u; r < S; r = r + 1u) {
        if (sp == r) {
            for (var d = 0u; d < D4; d = d + 1u) { ks[ql * D4 + d] = (*acc)[d]; }
        }
        workgroupBarrier();
        if (sp == 0u) {
            for (var d = 0u; d < D4; d = d + 1u) { (*acc)[d] = (*acc)[d] + ks[ql * D4 + d]; }
        }
        workgroupBarrier();
    }
}

