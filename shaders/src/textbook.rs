//! Loop-by-loop references for tests (the kernels' and burn's): slow, obvious, independent of
//! any backend.

/// Direct 3-D convolution (cross-correlation) with zero padding, loop by loop: `x` of shape
/// `xs = [B, Ci, T, H, W]`, `w` of shape `ws = [Co, Ci, KT, KH, KW]`, `bias [Co]` → the output and
/// its shape.
#[allow(clippy::too_many_arguments)]
pub fn conv3d(
    x: &[f32],
    xs: [usize; 5],
    w: &[f32],
    ws: [usize; 5],
    bias: &[f32],
    stride: [usize; 3],
    pad: [usize; 3],
) -> (Vec<f32>, [usize; 5]) {
    let [b, ci, t, h, wd] = xs;
    let [co, _, kt, kh, kw] = ws;
    let o = |n: usize, k: usize, s: usize, p: usize| (n + 2 * p - k) / s + 1;
    let (ot, oh, ow) = (
        o(t, kt, stride[0], pad[0]),
        o(h, kh, stride[1], pad[1]),
        o(wd, kw, stride[2], pad[2]),
    );
    let mut out = vec![0f32; b * co * ot * oh * ow];
    for bi in 0..b {
        for c in 0..co {
            for z in 0..ot {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut acc = bias[c];
                        for i in 0..ci {
                            for dz in 0..kt {
                                for dy in 0..kh {
                                    for dx in 0..kw {
                                        let (zz, yy, xi) = (
                                            (z * stride[0] + dz) as isize - pad[0] as isize,
                                            (y * stride[1] + dy) as isize - pad[1] as isize,
                                            (xx * stride[2] + dx) as isize - pad[2] as isize,
                                        );
                                        if zz < 0
                                            || yy < 0
                                            || xi < 0
                                            || zz >= t as isize
                                            || yy >= h as isize
                                            || xi >= wd as isize
                                        {
                                            continue;
                                        }
                                        let xv = x[(((bi * ci + i) * t + zz as usize) * h
                                            + yy as usize)
                                            * wd
                                            + xi as usize];
                                        acc +=
                                            xv * w[(((c * ci + i) * kt + dz) * kh + dy) * kw + dx];
                                    }
                                }
                            }
                        }
                        out[(((bi * co + c) * ot + z) * oh + y) * ow + xx] = acc;
                    }
                }
            }
        }
    }
    (out, [b, co, ot, oh, ow])
}
