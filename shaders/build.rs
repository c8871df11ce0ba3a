//! Every kernel is parsed and validated by naga (the shader translator wgpu uses) for each set
//! of template values it is instantiated with (head width, split, kernel size), so a WGSL error fails the build, not a user's GPU.

include!("src/template.rs");

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/template.rs");
    for (name, src) in KERNELS {
        for v in variants(src) {
            let text = instantiate(src, v);
            let module = naga::front::wgsl::parse_str(&text).unwrap_or_else(|e| {
                panic!("kernels/{name}.wgsl ({v:?}): {}", e.emit_to_string(&text))
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::default(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "kernels/{name}.wgsl ({v:?}) does not validate: {}",
                    e.emit_to_string(&text)
                )
            });
        }
    }
}
