// One AdamW step and the EMA of the new weights, elementwise over one flat parameter: the
// optimizer's whole update for a parameter in one pass (instead of a dozen tensor operations).
//
//   g' = scale·g;  m' = β₁m + (1 − β₁)g';  v' = β₂v + (1 − β₂)g'²
//   w' = w − lr·((m'/c₁)/(√(v'/c₂) + ε) + wd·w);  a' = d·a + (1 − d)·w'
//
// w, g, m, v, a: [n]; s: [4] = scale, ok, c₁, c₂ — computed on the device from the gradient's
// norm, so the host never waits for it; ok = 0 (a non-finite norm or loss) leaves w, m, v, a as
// they were. out: w', m', v', a', each n long, at 0, r, 2r, 3r (r ≥ n: each row starts where a
// storage binding may, so the host hands the rows out as tensors without copying). p: n, then
// the f32 bits of β₁, β₂, ε, wd, lr, d, then r.

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> a: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = p[0];
    let r = p[7];
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= n) { return; }
    if (s[1] == 0.0) {
        out[i] = w[i];
        out[r + i] = m[i];
        out[2u * r + i] = v[i];
        out[3u * r + i] = a[i];
        return;
    }
    let scale = s[0];
    let c1 = s[2];
    let c2 = s[3];
    let b1 = bitcast<f32>(p[1]);
    let b2 = bitcast<f32>(p[2]);
    let eps = bitcast<f32>(p[3]);
    let wd = bitcast<f32>(p[4]);
    let lr = bitcast<f32>(p[5]);
    let d = bitcast<f32>(p[6]);
    let gi = g[i] * scale;
    let mi = m[i] * b1 + gi * (1.0 - b1);
    let vi = v[i] * b2 + gi * gi * (1.0 - b2);
    let update = (mi / c1) / (sqrt(vi / c2) + eps);
    let wi = w[i] - (update + w[i] * wd) * lr;
    out[i] = wi;
    out[r + i] = mi;
    out[2u * r + i] = vi;
    out[3u * r + i] = a[i] * d + wi * (1.0 - d);
}
