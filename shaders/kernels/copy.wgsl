// Strided copy: y[b·ys + yo + j] = x[b·xs + xo + j] for j < per, b < batches (concatenation,
// slicing and repetition along a leading axis).
//
// p: batches, per, xs, xo, ys, yo.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let per = p[1];
    if (i >= p[0] * per) { return; }
    let b = i / per;
    let j = i % per;
    y[b * p[4] + p[5] + j] = x[b * p[2] + p[3] + j];
}
