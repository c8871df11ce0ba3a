// Shared by the attention kernels whose rows are split among S invocations and that keep a key
// tile `ks` of at least BQ·D4 vec4s (instantiate() prepends it to every kernel that calls
// add_splits): adds the S partial sums `acc` of each row into the invocation of split 0, through
// `ks` (the tiles are free by then). Call it from uniform control flow (it has barriers).

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

