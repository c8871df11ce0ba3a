// Group norm without affine over [B, C, P] (P = T·H·W positions; groups of C/G channels, each
// normalised over its channels and all positions), then the per-sample channel modulation
//   y = xn·(1 + m[b·2C + C + c]) + m[b·2C + c]   (m = [shift, scale] per sample: [B, 2C]),
// and SiLU when asked. Without normalisation (flag 1 off) only the modulation: the conv head's.
// One workgroup per (sample, group).
//
// x, y: [B, C, P]; m: [B, 2C]. p: B·G, C, P, G, eps (f32 bits), flags (1: normalise, 2: SiLU).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pw = load_params(lid);
    let bg = pw[0];
    let c = pw[1];
    let np = pw[2];
    let g = pw[3];
    let eps = bitcast<f32>(pw[4]);
    let flags = pw[5];
    let id = wg.x + wg.y * nwg.x;
    if (id >= bg) { return; }
    let b = id / g;
    let cg = c / g; // channels per group
    let len = cg * np;
    let base = (b * c + (id % g) * cg) * np; // the group's channels are contiguous
    var mean = 0.0;
    var rstd = 1.0;
    if ((flags & 1u) != 0u) {
        var s = 0.0;
        for (var i = lid; i < len; i = i + WG) { s = s + x[base + i]; }
        mean = workgroup_sum(s, lid) / f32(len);
        var s2 = 0.0;
        for (var i = lid; i < len; i = i + WG) {
            let v = x[base + i] - mean;
            s2 = s2 + v * v;
        }
        rstd = 1.0 / sqrt(workgroup_sum(s2, lid) / f32(len) + eps);
    }
    for (var i = lid; i < len; i = i + WG) {
        let ch = (id % g) * cg + i / np;
        var v = (x[base + i] - mean) * rstd * (1.0 + m[b * 2u * c + c + ch]) + m[b * 2u * c + ch];
        if ((flags & 2u) != 0u) { v = v / (1.0 + exp(-v)); }
        y[base + i] = v;
    }
}
