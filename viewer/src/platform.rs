//! The native side of what differs between desktop and browser: file dialogs and writing files.
//! (The browser shell — issue 6 — gives these a download / file-input implementation.)

use std::path::PathBuf;

use crate::engine::ModelSource;
use flick_core::video::Video;

/// Exports are upscaled so a 32×32 clip is not a speck in an image viewer.
const EXPORT_SCALE: usize = 8;

/// Ask for a checkpoint file (`None`: cancelled, or no dialog service on this desktop).
pub fn pick_checkpoint() -> Option<ModelSource> {
    rfd::FileDialog::new().add_filter("Flick checkpoint", &["safetensors"]).pick_file().map(ModelSource::Path)
}

/// Save `video` as an animated GIF where the user chooses. `Ok(Some(message))` on success.
pub fn export_gif(video: &Video, fps: u32) -> Result<Option<String>, String> {
    let Some(path) = rfd::FileDialog::new().add_filter("GIF", &["gif"]).set_file_name("clip.gif").save_file() else { return Ok(None) };
    write_gif(video, fps, &path).map(Some)
}

/// Save `video`'s frames as PNGs into a folder the user chooses.
pub fn export_frames(video: &Video) -> Result<Option<String>, String> {
    let Some(dir) = rfd::FileDialog::new().pick_folder() else { return Ok(None) };
    write_frames(video, &dir).map(Some)
}

pub fn write_gif(video: &Video, fps: u32, path: &PathBuf) -> Result<String, String> {
    video.upscale(EXPORT_SCALE).write_gif(path, fps).map_err(|e| e.to_string())?;
    Ok(format!("wrote {}", path.display()))
}

pub fn write_frames(video: &Video, dir: &PathBuf) -> Result<String, String> {
    video.upscale(EXPORT_SCALE).write_png_frames(dir).map_err(|e| e.to_string())?;
    Ok(format!("wrote {} frames to {}", video.frames, dir.display()))
}
