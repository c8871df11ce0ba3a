// Shared by the kernels with barriers (instantiate() prepends it to every kernel that calls
// load_params): the 8 parameter words of binding `p`, copied to workgroup memory and read back
// with workgroupUniformLoad, so that loops bounded by them count as uniform control flow. WGSL's
// uniformity analysis treats values read from a read_write buffer as non-uniform, and browsers
// (Tint) refuse barriers that depend on them, though naga accepts them. Call it first, from
// uniform control flow.

var<workgroup> wp: array<u32, 8>;

fn load_params(lid: u32) -> array<u32, 8> {
    if (lid == 0u) {
        for (var i = 0u; i < 8u; i = i + 1u) { wp[i] = p[i]; }
    }
    return workgroupUniformLoad(&wp);
}

