// Partial sums of squares of one tensor into row `row` of a table of `s` columns: workgroup k
// of the s workgroups takes the elements i ≡ k·64 + lid (mod s·64) and writes their Σx² to
// table[row·s + k], so the row sums to Σx². The optimizer's global gradient norm is the square
// root of the whole table's sum: one launch per parameter, each writing its own row of one
// buffer, instead of a square, a sum and a copy into a concatenation per parameter.
//
// x: [n]; table: [rows·s]. p: n, row, s.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let n = pw[0];
    let s = pw[2];
    let k = wg.x + wg.y * nwg.x;
    if (k >= s) { return; }
    var acc = 0.0;
    for (var i = k * 64u + lid; i < n; i = i + s * 64u) {
        let v = x[i];
        acc = acc + v * v;
    }
    let total = workgroup_sum(acc, lid);
    if (lid == 0u) { table[pw[1] * s + k] = total; }
}
