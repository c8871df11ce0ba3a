// 3-D convolution, stride 1, zero padding that keeps the size, kernel KT×3×3 (KT = 1 or 3):
//   y[b, co, t, r, c] = bias[co] + Σ_ci Σ_(kt,ky,kx) w[co, ci, kt, ky, kx]·x[b, ci, t+kt−KT/2, r+ky−1, c+kx−1].
// One invocation per output position and block of COB output channels (each input value read
// once for COB outputs); neighbouring invocations take neighbouring columns of the same channels
// (coalesced input reads, the same weights: broadcast). No barriers. Also the input gradient:
// the same convolution of the output gradient with the kernel flipped and its channel axes
// swapped.
//
// x: [B, Ci, T, H, W]; w: [Co, Ci, KT, 3, 3]; bias: [Co]; y: [B, Co, T, H, W].
// p: B, Ci, Co, T, H, W, whether there is a bias (the input gradient has none; the binding is
// then any buffer).

const KT: u32 = {{ kt }}u;
const COB: u32 = 4u; // output channels per invocation

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bn = p[0];
    let cin = p[1];
    let cout = p[2];
    let tn = p[3];
    let hn = p[4];
    let wn = p[5];
    let with_bias = p[6] != 0u;
    let hw = hn * wn;
    let plane = tn * hw;
    let blocks = (cout + COB - 1u) / COB;
    // [B, blocks, T, H, W]: one output position and block of channels per invocation.
    let idx = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (idx >= bn * blocks * plane) { return; }
    let pos = idx % plane;
    let co0 = ((idx / plane) % blocks) * COB;
    let b = idx / (plane * blocks);
    let c = pos % wn;
    let r = (pos / wn) % hn;
    let t = pos / hw;

    var acc: array<f32, COB>;
    var wrow: array<u32, COB>; // start of each output channel's weights (clamped to a real one)
    for (var j = 0u; j < COB; j = j + 1u) {
        let co = min(co0 + j, cout - 1u);
        acc[j] = select(0.0, bias[co], with_bias);
        wrow[j] = co * cin * KT * 9u;
    }
    let has_left = c > 0u;
    let has_right = c + 1u < wn;
    for (var ci = 0u; ci < cin; ci = ci + 1u) {
        let xb = (b * cin + ci) * plane;
        for (var kt = 0u; kt < KT; kt = kt + 1u) {
            let tt = i32(t) + i32(kt) - i32(KT / 2u);
            if (tt < 0 || tt >= i32(tn)) { continue; }
            for (var ky = 0u; ky < 3u; ky = ky + 1u) {
                let rr = i32(r) + i32(ky) - 1;
                if (rr < 0 || rr >= i32(hn)) { continue; }
                let row = xb + u32(tt) * hw + u32(rr) * wn + c;
                let xl = select(0.0, x[select(row, row - 1u, has_left)], has_left);
                let xm = x[row];
                let xr = select(0.0, x[select(row, row + 1u, has_right)], has_right);
                let wk = (ci * KT + kt) * 9u + ky * 3u;
                for (var j = 0u; j < COB; j = j + 1u) {
                    let wi = wrow[j] + wk;
                    acc[j] = acc[j] + w[wi] * xl + w[wi + 1u] * xm + w[wi + 2u] * xr;
                }
            }
        }
    }
    for (var j = 0u; j < COB; j = j + 1u) {
        if (co0 + j < cout) { y[(b * cout + co0 + j) * plane + pos] = acc[j]; }
    }
}
