// Shared by the kernels that reduce a row per workgroup of 64 (instantiate() prepends it to every
// kernel that calls workgroup_sum): the sum of `v` over the workgroup, by a tree reduction in
// workgroup memory. Call it from uniform control flow (it has barriers).

var<workgroup> red: array<f32, 64>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var s = 32u;
    loop {
        if (s == 0u) { break; }
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
        s = s >> 1u;
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

