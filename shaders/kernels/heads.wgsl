// Attention heads in and out of the kernels' layout. Split: rows [B·N] of width `stride`, the
// heads' values at columns off + h·dh + e → [B, H, N, dh]. Merge (flag): [B, H, N, dh] →
// [B, N, H·dh]. One invocation per value.
//
// p: B, N, H, dh, stride, off, merge.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let bn = p[0];
    let n = p[1];
    let h = p[2];
    let dh = p[3];
    if (i >= bn * h * n * dh) { return; }
    // i in [B, H, N, dh] order
    let e = i % dh;
    let t = (i / dh) % n;
    let hh = (i / (dh * n)) % h;
    let b = i / (dh * n * h);
    if (p[6] == 0u) {
        y[i] = x[(b * n + t) * p[4] + p[5] + hh * dh + e];
    } else {
        y[(b * n + t) * h * dh + hh * dh + e] = x[i];
    }
}
