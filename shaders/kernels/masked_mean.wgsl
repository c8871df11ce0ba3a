// Weighted sum over a sequence: y[b, c] = Σ_j mask[b·L + j]·x[b, j, c] (the text encoder's
// pooled feature, mask = 1/len on real tokens). One invocation per output.
//
// p: B, L, C.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let l = p[1];
    let c = p[2];
    if (i >= p[0] * c) { return; }
    let b = i / c;
    let ch = i % c;
    var s = 0.0;
    for (var j = 0u; j < l; j = j + 1u) { s = s + mask[b * l + j] * x[(b * l + j) * c + ch]; }
    y[i] = s;
}
