//! Every kernel is parsed and validated by naga (the shader translator wgpu uses) for each head
//! width it is instantiated with, so a WGSL error fails the build, not a user's GPU.

include!("src/template.rs");

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/template.rs");
    for (name, src) in KERNELS {
        let widths: &[u32] = if src.contains("{{ dh }}") { HEAD_DIMS } else { &[0] };
        for &dh in widths {
            let text = instantiate(src, dh);
            let module = naga::front::wgsl::parse_str(&text).unwrap_or_else(|e| panic!("kernels/{name}.wgsl (dh = {dh}): {}", e.emit_to_string(&text)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
                .validate(&module)
                .unwrap_or_else(|e| panic!("kernels/{name}.wgsl (dh = {dh}) does not validate: {}", e.emit_to_string(&text)));
        }
    }
}
