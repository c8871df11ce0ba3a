// 3-D convolution (as in conv_fwd), weight gradient, in chunks of positions:
//   part[ch, co, ci, kt, ky, kx] = Σ_(b,t,r,c) in chunk ch  dy[b, co, t, r, c]·x[b, ci, t+kt−KT/2, r+ky−1, c+kx−1].
// A workgroup per (chunk, output channel, input channel): its invocations stride over the
// chunk's positions with the KT·9 sums in registers, then add them up through workgroup
// memory. The chunks (enough of them to fill the GPU) are added by the caller.
//
// x: [B, Ci, T, H, W]; dy: [B, Co, T, H, W]; part: [chunks, Co, Ci, KT, 3, 3].
// p: B, Ci, Co, T, H, W, chunks.

const KT: u32 = {{ kt }}u;
const K: u32 = KT * 9u;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

var<workgroup> sums: array<f32, 64 * K>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let bn = pw[0];
    let cin = pw[1];
    let cout = pw[2];
    let tn = pw[3];
    let hn = pw[4];
    let wn = pw[5];
    let chunks = pw[6];
    let w = wg.x + wg.y * nwg.x;
    if (w >= chunks * cout * cin) { return; }
    let ci = w % cin;
    let co = (w / cin) % cout;
    let ch = w / (cin * cout);
    let hw = hn * wn;
    let plane = tn * hw;
    let total = bn * plane;
    let len = (total + chunks - 1u) / chunks;
    let end = min((ch + 1u) * len, total);

    var acc: array<f32, K>;
    for (var q = ch * len + lid; q < end; q = q + 64u) {
        let b = q / plane;
        let pos = q % plane;
        let c = pos % wn;
        let r = (pos / wn) % hn;
        let t = pos / hw;
        let g = dy[(b * cout + co) * plane + pos];
        let xb = (b * cin + ci) * plane;
        let has_left = c > 0u;
        let has_right = c + 1u < wn;
        for (var kt = 0u; kt < KT; kt = kt + 1u) {
            let tt = i32(t) + i32(kt) - i32(KT / 2u);
            for (var ky = 0u; ky < 3u; ky = ky + 1u) {
                let rr = i32(r) + i32(ky) - 1;
                let inside = tt >= 0 && tt < i32(tn) && rr >= 0 && rr < i32(hn);
                let row = select(xb + pos, xb + u32(tt) * hw + u32(rr) * wn + c, inside);
                let k = kt * 9u + ky * 3u;
                acc[k] = acc[k] + g * select(0.0, x[select(row, row - 1u, has_left)], inside && has_left);
                acc[k + 1u] = acc[k + 1u] + g * select(0.0, x[row], inside);
                acc[k + 2u] = acc[k + 2u] + g * select(0.0, x[select(row, row + 1u, has_right)], inside && has_right);
            }
        }
    }
    for (var k = 0u; k < K; k = k + 1u) { sums[lid * K + k] = acc[k]; }
    workgroupBarrier();
    if (lid < K) {
        var s = 0.0;
        for (var i = 0u; i < 64u; i = i + 1u) { s = s + sums[i * K + lid]; }
        part[((ch * cout + co) * cin + ci) * K + lid] = s;
    }
}
