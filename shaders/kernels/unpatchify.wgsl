// Token rows back to a clip: x [B, T/pt, H/ph, W/pw, pt·ph·pw·co] (each row in (t, y, x,
// channel) order, the DiT's final projection) → channels 0..co of y [B, ct, T, H, W] (ct ≥ co:
// the conv head's input, whose other channels are the stem's features). One invocation per value
// written.
//
// p: B, co, T, H, W, pt, ph, pw, ct.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    let co = p[1];
    let tn = p[2];
    let hn = p[3];
    let wn = p[4];
    let pt = p[5];
    let ph = p[6];
    let pwd = p[7];
    let ct = p[8];
    let plane = tn * hn * wn;
    if (i >= p[0] * co * plane) { return; }
    // i in [B, co, T, H, W] order
    let xx = i % wn;
    let yy = (i / wn) % hn;
    let tt = (i / (wn * hn)) % tn;
    let ch = (i / plane) % co;
    let b = i / (plane * co);
    let gt = tn / pt;
    let gh = hn / ph;
    let gw = wn / pwd;
    let tok = ((b * gt + tt / pt) * gh + yy / ph) * gw + xx / pwd;
    let col = (((tt % pt) * ph + yy % ph) * pwd + xx % pwd) * co + ch;
    y[(b * ct + ch) * plane + (tt * hn + yy) * wn + xx] = x[tok * pt * ph * pwd * co + col];
}
