// Fused adaLN backward, modulation gradients: for each sample b and channel i,
//   dscale[b, i] = Σ_rows-of-b dy·xh,   dshift[b, i] = Σ_rows-of-b dy,
// with xh recomputed from x and the forward's (mean, rstd). One invocation per (b, i); the
// invocations of a workgroup read neighbouring channels of the same rows.
//
// x, dy: [B·n, d]; stats: [B·n, 2]; dshift, dscale: [B, d]. p: B, n, d.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dshift: array<f32>;
@group(0) @binding(4) var<storage, read_write> dscale: array<f32>;
@group(0) @binding(5) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let samples = p[0];
    let n = p[1];
    let d = p[2];
    let t = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (t >= samples * d) { return; }
    let b = t / d;
    let i = t % d;
    var ss = 0.0;
    var sh = 0.0;
    for (var r = 0u; r < n; r = r + 1u) {
        let row = b * n + r;
        let g = dy[row * d + i];
        let xh = (x[row * d + i] - stats[row * 2u]) * stats[row * 2u + 1u];
        ss = ss + g * xh;
        sh = sh + g;
    }
    dscale[t] = ss;
    dshift[t] = sh;
}
