// Gradient of the row normalisation (row_norm_fwd): with xh = (x − mean)·rstd,
//   dx = rstd·(dy − mean(dy) − xh·mean(dy·xh))      (means over the row)
// One workgroup per row; (mean, rstd) come from the forward pass.
//
// x, dy, dx: [rows, s]; stats: [rows, 2]. p: rows, s.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let rows = pw[0];
    let s = pw[1];
    let row = wg.x + wg.y * nwg.x;
    if (row >= rows) { return; }
    let base = row * s;
    let mean = stats[row * 2u];
    let rstd = stats[row * 2u + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = lid; i < s; i = i + WG) {
        let g = dy[base + i];
        sg = sg + g;
        sgx = sgx + g * (x[base + i] - mean) * rstd;
    }
    let mg = workgroup_sum(sg, lid) / f32(s);
    let mgx = workgroup_sum(sgx, lid) / f32(s);
    for (var i = lid; i < s; i = i + WG) {
        let xh = (x[base + i] - mean) * rstd;
        dx[base + i] = rstd * (dy[base + i] - mg - xh * mgx);
    }
}
