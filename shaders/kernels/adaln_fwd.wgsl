// Fused adaLN forward: layer norm over the last dimension (no affine), then the per-sample
// modulation of DiT's adaLN:  y = (x − mean)·rstd·(1 + scale[b]) + shift[b],
// rstd = 1/sqrt(var + eps). One workgroup per row; also writes (mean, rstd) of each row for the
// backward pass.
//
// x, y: [rows, d] with rows = B·n; shift, scale: [B, d]; stats: [rows, 2].
// p: rows, n (rows per sample), d, eps (f32 bits), shared (1: shift and scale are one [d] row
// for every sample, a learned layer norm's).

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> shift: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> p: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let rows = pw[0];
    let n = pw[1];
    let d = pw[2];
    let eps = bitcast<f32>(pw[3]);
    let row = wg.x + wg.y * nwg.x;
    if (row >= rows) { return; }
    let base = row * d;
    let sample = select((row / n) * d, 0u, pw[4] == 1u);

    var s = 0.0;
    for (var i = lid; i < d; i = i + WG) { s = s + x[base + i]; }
    let mean = workgroup_sum(s, lid) / f32(d);
    var s2 = 0.0;
    for (var i = lid; i < d; i = i + WG) {
        let c = x[base + i] - mean;
        s2 = s2 + c * c;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(s2, lid) / f32(d) + eps);
    for (var i = lid; i < d; i = i + WG) {
        let xh = (x[base + i] - mean) * rstd;
        y[base + i] = xh * (1.0 + scale[sample + i]) + shift[sample + i];
    }
    if (lid == 0u) {
        stats[row * 2u] = mean;
        stats[row * 2u + 1u] = rstd;
    }
}
