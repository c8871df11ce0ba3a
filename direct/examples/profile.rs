//! Where flick-direct's time goes on this machine's GPU adapter: a one-step generation of four
//! clips with the bundled generator, each launch submitted and timed alone.
//!
//!   cargo run -p flick-direct --example profile [-- CHECKPOINT [BATCH]]

use std::rc::Rc;

use flick_direct::{Generator, Gpu, wgpu};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        format!(
            "{}/../models/generator-small.safetensors",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let batch: usize = args
        .next()
        .map_or(Ok(4), |b| b.parse())
        .map_err(|e| format!("batch: {e}"))?;
    let gpu = Rc::new(pollster::block_on(Gpu::open(wgpu::Backends::PRIMARY))?);
    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let g = Generator::from_bytes(&bytes, &gpu)?;
    let prompts = vec!["a large red circle moving left on black".to_string(); batch];
    let seeds: Vec<u64> = (1..=batch as u64).collect();
    let run = || pollster::block_on(g.generate_videos_async(&prompts, &seeds, 1, 1.0, |_, _| {}));
    run()?; // compiles the kernels
    let t0 = std::time::Instant::now();
    run()?;
    let whole = t0.elapsed().as_secs_f64();
    gpu.set_profiling(true);
    let launches0 = gpu.launches();
    let t0 = std::time::Instant::now();
    run()?;
    let profiled = t0.elapsed().as_secs_f64();
    let rows = gpu.profile();
    let total: f64 = rows.iter().map(|r| r.2).sum();
    println!(
        "{batch} clips, one step: {:.1} ms as one submission; {:.1} ms launch by launch ({} launches, {} buffers copied for aliasing)",
        whole * 1e3,
        profiled * 1e3,
        gpu.launches() - launches0,
        gpu.aliased_copies()
    );
    println!("| kernel | launches | ms | share |\n|---|---|---|---|");
    for (name, n, t) in rows {
        println!(
            "| {name} | {n} | {:.1} | {:.0}% |",
            t * 1e3,
            100.0 * t / total
        );
    }
    Ok(())
}
