//! `flick score`: how often generated clips show what the prompt asked for, read from the pixels
//! by `flick_core::eval::analytic` (colour, shape, size, motion, background), on prompts of the
//! training distribution and of the held-out attribute combinations.

use std::path::Path;
use std::time::Instant;

use flick_core::data::shapes::{Attributes, ShapesConfig, ShapesSource, Split, canonical_caption};
use flick_core::eval::analytic::{Agreement, agreement, read};
use flick_core::generate::Generator;
use flick_core::video::{Video, frame_grid};

/// One scored split.
pub struct Scored {
    pub split: Split,
    pub agreement: Agreement,
    pub seconds_per_clip: f32,
}

/// The deterministic prompt set of a split: single objects, canonical captions.
pub fn prompt_set(split: Split, n: usize, frames: usize, height: usize, width: usize) -> Vec<(String, Attributes)> {
    let s = ShapesSource::new(ShapesConfig { frames, height, width, two_object_prob: 0.0 }, 1234).expect("valid geometry");
    (0..n as u64)
        .map(|i| {
            let a = s.sample(split, i).attributes;
            (canonical_caption(a.main(), a.background), a)
        })
        .collect()
}

/// Generate `n` clips per split in batches of `batch` and score them; writes a grid PNG of the
/// first 8 per split into `grid_dir` if given.
pub fn score(generator: &Generator, n: usize, steps: usize, guidance: f32, batch: usize, grid_dir: Option<&Path>) -> anyhow::Result<Vec<Scored>> {
    let c = &generator.info.config;
    let mut out = Vec::new();
    for split in [Split::Train, Split::HeldOut] {
        let set = prompt_set(split, n, c.frames, c.height, c.width);
        let mut pairs = Vec::new();
        let mut videos = Vec::new();
        let t0 = Instant::now();
        for (chunk_i, chunk) in set.chunks(batch.max(1)).enumerate() {
            let prompts: Vec<String> = chunk.iter().map(|p| p.0.clone()).collect();
            let seeds: Vec<u64> = (0..chunk.len()).map(|j| (chunk_i * batch + j) as u64).collect();
            let clips = generator.generate_clips(&prompts, &seeds, steps, guidance, |_, _| {})?;
            for (clip, (_, attrs)) in clips.iter().zip(chunk) {
                pairs.push((read(clip), attrs.clone()));
                if videos.len() < 8 {
                    videos.push(Video::from_clip(clip));
                }
            }
        }
        let seconds_per_clip = t0.elapsed().as_secs_f32() / n.max(1) as f32;
        if let Some(dir) = grid_dir {
            std::fs::create_dir_all(dir)?;
            let name = format!("score-{}-{steps}steps.png", if split == Split::Train { "train" } else { "heldout" });
            frame_grid(&videos, 3).save(dir.join(name))?;
        }
        out.push(Scored { split, agreement: agreement(&pairs), seconds_per_clip });
    }
    Ok(out)
}

/// A markdown table of scores.
pub fn table(rows: &[(String, Vec<Scored>)]) -> String {
    let mut s = String::from("| model | prompts | colour | shape | size | motion | background | all five | s/clip |\n|---|---|---|---|---|---|---|---|---|\n");
    for (name, scored) in rows {
        for r in scored {
            let a = &r.agreement;
            let pct = |v: f32| format!("{:.0}%", v * 100.0);
            s += &format!(
                "| {name} | {} ({}) | {} | {} | {} | {} | {} | {} | {:.2} |\n",
                if r.split == Split::Train { "train-like" } else { "held-out" },
                a.clips,
                pct(a.color),
                pct(a.shape),
                pct(a.size),
                pct(a.motion),
                pct(a.background),
                pct(a.all),
                r.seconds_per_clip
            );
        }
    }
    s
}
