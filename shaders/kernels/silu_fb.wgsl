// SiLU for training, out of place: forward y = x·σ(x) (mode 0), or its gradient
// dx = dy·σ(x)·(1 + x·(1 − σ(x))) (mode 1); σ the logistic sigmoid. One invocation per element.
//
// x, dy, out: [n] (dy unused by the forward). p: n, mode.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p[0]) { return; }
    let v = x[i];
    let s = 1.0 / (1.0 + exp(-v));
    if (p[1] == 0u) {
        out[i] = v * s;
    } else {
        out[i] = dy[i] * s * (1.0 + v * (1.0 - s));
    }
}
