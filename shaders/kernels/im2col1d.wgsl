// Windows of a sequence as rows, for a 1-D convolution (size-keeping zero padding) as one dense
// layer: x [B, L, C] → y [B, L, C·k], y[b, l, c·k + j] = x[b, l + j − k/2, c] (0 outside).
//
// p: B, L, C, k.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let l = p[1];
    let c = p[2];
    let k = p[3];
    if (i >= p[0] * l * c * k) { return; }
    let j = i % k;
    let ch = (i / k) % c;
    let row = i / (k * c);
    let pos = i32(row % l) + i32(j) - i32(k / 2u);
    var v = 0.0;
    if (pos >= 0 && pos < i32(l)) { v = x[(row - row % l + u32(pos)) * c + ch]; }
    y[i] = v;
}
