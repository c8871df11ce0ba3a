// Row normalisation without affine parameters (the group norm on [B·G, C/G·T·H·W]):
//   y = (x − mean)·rstd,  rstd = 1/sqrt(var + eps)  (biased variance, per row),
// also writing (mean, rstd) of each row for the backward pass. One workgroup per row: a mean
// pass, a variance pass about it, a writing pass.
//
// x, y: [rows, s]; stats: [rows, 2]. p: rows, s, eps (f32 bits).

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let rows = pw[0];
    let s = pw[1];
    let eps = bitcast<f32>(pw[2]);
    let row = wg.x + wg.y * nwg.x;
    if (row >= rows) { return; }
    let base = row * s;
    var a = 0.0;
    for (var i = lid; i < s; i = i + WG) { a = a + x[base + i]; }
    let mean = workgroup_sum(a, lid) / f32(s);
    var b = 0.0;
    for (var i = lid; i < s; i = i + WG) {
        let c = x[base + i] - mean;
        b = b + c * c;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(b, lid) / f32(s) + eps);
    for (var i = lid; i < s; i = i + WG) { y[base + i] = (x[base + i] - mean) * rstd; }
    if (lid == 0u) {
        stats[row * 2u] = mean;
        stats[row * 2u + 1u] = rstd;
    }
}
