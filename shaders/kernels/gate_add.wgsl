// DiT's gated residual: y = x + z·gate, gate[i] = g[s·gstride + goff + i] for the sample s =
// row / n of each row (adaLN-Zero's gate chunk of the modulation).
//
// x, z, y: [rows, d]; g: [B, gstride]. p: rows, n, d, gstride, goff.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let d = p[2];
    if (i >= p[0] * d) { return; }
    let row = i / d;
    y[i] = x[i] + z[i] * g[(row / p[1]) * p[3] + p[4] + i % d];
}
