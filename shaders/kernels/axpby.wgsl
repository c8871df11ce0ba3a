// out[oo + i] = a·x[xo + i] + b·y[yo + i mod ylen] for i < n: the sampler's arithmetic (Euler
// steps, guidance, preconditioning, re-noising) and residual sums, on slices of buffers.
//
// p: n, xo, yo, oo, a (f32 bits), b (f32 bits), ylen.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p[0]) { return; }
    out[p[3] + i] = bitcast<f32>(p[4]) * x[p[1] + i] + bitcast<f32>(p[5]) * y[p[2] + i % p[6]];
}
