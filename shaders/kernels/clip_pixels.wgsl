// Model clips → 8-bit pixels for display: clamp to [-1, 1], scale to 0..255 (rounding half
// up, as the CPU path's `round` does for these non-negative values), move the channel axis last
// and pack each pixel's bytes as one number r + 256·g + 65536·b (below 2^24, so exact in an
// f32): the read-back is a third of the f32 clip, and every backend can compute the same values.
//
// x: [B, 3, T, H, W] in [-1, 1]; out: [B, T, H, W] packed pixels. p: B, T·H·W.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

fn byte(v: f32) -> u32 {
    return u32(floor((clamp(v, -1.0, 1.0) + 1.0) * 127.5 + 0.5));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let clips = p[0];
    let pixels = p[1];
    let t = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (t >= clips * pixels) { return; }
    let b = t / pixels;
    let i = t % pixels;
    let base = b * 3u * pixels + i;
    let r = byte(x[base]);
    let g = byte(x[base + pixels]);
    let bl = byte(x[base + 2u * pixels]);
    out[t] = f32(r | (g << 8u) | (bl << 16u));
}
