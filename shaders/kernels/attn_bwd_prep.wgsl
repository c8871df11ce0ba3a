// Before the attention's gradient kernels: ld = [lse, D] with D_i = do_i·o_i per query row (one
// buffer, to stay within WebGPU's 8 storage buffers per kernel in the gradient kernels). One
// invocation per query row: one launch instead of a product, a sum and a concatenation.
//
// lse: [BH, Nq]; o, dout: [BH, Nq, DH], or with their heads interleaved (il; see row4);
// ld: [2, BH, Nq]. p: BH, heads, Nq, -, -, -, il.

const DH: u32 = {{ dh }}u;
const D4: u32 = DH / 4u;

// Every binding is read_write: cubecl sub-allocates tensors from shared buffers, so an input
// and an output may be two ranges of one wgpu buffer, which must then have one usage.
@group(0) @binding(0) var<storage, read_write> lse: array<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ld: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let heads = p[1];
    let nq = p[2];
    let il = p[6];
    let rows = p[0] * nq;
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= rows) { return; }
    let base = row4(i / nq, i % nq, nq, heads, il);
    var acc = vec4<f32>();
    for (var d = 0u; d < D4; d = d + 1u) { acc = acc + o[base + d] * dout[base + d]; }
    ld[i] = lse[i];
    ld[rows + i] = acc.x + acc.y + acc.z + acc.w;
}
