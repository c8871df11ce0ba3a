// 3-D patches as rows: x [B, C, T, H, W] → y [B, T/pt, H/ph, W/pw, C·pt·ph·pw], each row in
// (channel, t, y, x) order — the layout of a Conv3d weight with kernel = stride = patch, so the
// patch embedding is one dense layer. One invocation per value.
//
// p: B, C, T, H, W, pt, ph, pw.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let c = p[1];
    let tn = p[2];
    let hn = p[3];
    let wn = p[4];
    let pt = p[5];
    let ph = p[6];
    let pwd = p[7];
    if (i >= p[0] * c * tn * hn * wn) { return; }
    let k = c * pt * ph * pwd; // row width
    let gt = tn / pt;
    let gh = hn / ph;
    let gw = wn / pwd;
    let col = i % k;
    let tok = i / k;
    let b = tok / (gt * gh * gw);
    let gx = tok % gw;
    let gy = (tok / gw) % gh;
    let gz = (tok / (gw * gh)) % gt;
    let ix = col % pwd;
    let iy = (col / pwd) % ph;
    let iz = (col / (pwd * ph)) % pt;
    let ch = col / (pwd * ph * pt);
    y[i] = x[(((b * c + ch) * tn + gz * pt + iz) * hn + gy * ph + iy) * wn + gx * pwd + ix];
}
