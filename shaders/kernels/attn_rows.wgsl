// Shared by the attention kernels (instantiate() prepends it to every kernel that calls row4).

// The first vec4 of row i of head bh in a tensor of n rows per head: laid out [BH, n, DH]
// (il = 0), or heads interleaved, [B, n, heads, DH] (il = 1: a linear layer's output split into
// heads without a copy; the outputs are written the same way, so that merging the heads back
// needs no copy either).
fn row4(bh: u32, i: u32, n: u32, heads: u32, il: u32) -> u32 {
    if (il == 1u) { return ((bh / heads * n + i) * heads + bh % heads) * D4; }
    return (bh * n + i) * D4;
}
