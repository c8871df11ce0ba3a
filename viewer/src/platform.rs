//! What differs between desktop and browser: choosing a checkpoint to open, and exports. Native:
//! file dialogs and files. Browser: a file input whose bytes arrive later ([`picked`]),
//! addresses instead of paths, and downloads instead of files.

use crate::engine::ModelSource;
use flick_core::video::Video;

pub use imp::*;

/// Exports are upscaled so a 32×32 clip is not a speck in an image viewer.
const EXPORT_SCALE: usize = 8;

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::path::PathBuf;

    use super::*;

    pub const OPEN_BY_LABEL: &str = "or open by path:";
    pub const OPEN_BY_HINT: &str = "runs/x/generator.safetensors";

    /// A checkpoint named by the user or remembered from last time: a path.
    pub fn reopen(name: &str) -> ModelSource {
        ModelSource::Path(PathBuf::from(name))
    }

    /// Ask for a checkpoint file (`None`: cancelled, or no dialog service on this desktop).
    pub fn pick_checkpoint(_ctx: &egui::Context) -> Option<ModelSource> {
        rfd::FileDialog::new()
            .add_filter("Flick checkpoint", &["safetensors"])
            .pick_file()
            .map(ModelSource::Path)
    }

    /// Files picked since the last call whose bytes arrived later, or why one could not be
    /// read (never, natively).
    pub fn picked() -> Vec<Result<ModelSource, String>> {
        Vec::new()
    }

    /// Save `video` as an animated GIF where the user chooses. `Ok(Some(message))` on success.
    pub fn export_gif(video: &Video, fps: u32) -> Result<Option<String>, String> {
        let Some(path) = rfd::FileDialog::new()
            .add_filter("GIF", &["gif"])
            .set_file_name("clip.gif")
            .save_file()
        else {
            return Ok(None);
        };
        write_gif(video, fps, &path).map(Some)
    }

    /// Save `video`'s frames as PNGs into a folder the user chooses.
    pub fn export_frames(video: &Video) -> Result<Option<String>, String> {
        let Some(dir) = rfd::FileDialog::new().pick_folder() else {
            return Ok(None);
        };
        write_frames(video, &dir).map(Some)
    }

    pub fn write_gif(video: &Video, fps: u32, path: &std::path::Path) -> Result<String, String> {
        video
            .upscale(EXPORT_SCALE)
            .write_gif(path, fps)
            .map_err(|e| e.to_string())?;
        Ok(format!("wrote {}", path.display()))
    }

    pub fn write_frames(video: &Video, dir: &std::path::Path) -> Result<String, String> {
        video
            .upscale(EXPORT_SCALE)
            .write_png_frames(dir)
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "wrote {} frames to {}",
            video.frames,
            dir.display()
        ))
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::RefCell;
    use std::sync::Arc;

    use wasm_bindgen::JsCast;

    use super::*;

    pub const OPEN_BY_LABEL: &str = "or open by address:";
    pub const OPEN_BY_HINT: &str = "models/generator-small.safetensors";

    thread_local! {
        static PICKED: RefCell<Vec<Result<ModelSource, String>>> = const { RefCell::new(Vec::new()) };
    }

    /// A checkpoint named by the user or remembered from last time: an address to download.
    pub fn reopen(name: &str) -> ModelSource {
        ModelSource::Url(name.to_string())
    }

    /// Open the browser's file chooser; the file's bytes arrive later, through [`picked`].
    pub fn pick_checkpoint(ctx: &egui::Context) -> Option<ModelSource> {
        let ctx = ctx.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Some(file) = rfd::AsyncFileDialog::new()
                .add_filter("Flick checkpoint", &["safetensors"])
                .pick_file()
                .await
            {
                let name = file.file_name();
                // Sized before it is read: a file far larger than any checkpoint would fill
                // the page's memory.
                let size = file.inner().size() as u64;
                let picked = if size > MAX_PICKED_BYTES {
                    Err(format!(
                        "{name}: not a usable Flick checkpoint: {size} bytes is too large (at most {} MiB in the browser)",
                        MAX_PICKED_BYTES >> 20
                    ))
                } else {
                    Ok(ModelSource::Bytes {
                        name,
                        bytes: Arc::new(file.read().await),
                    })
                };
                PICKED.with(|p| p.borrow_mut().push(picked));
                // Nothing else wakes the page: the file must be taken in now, not at the next
                // mouse move.
                ctx.request_repaint();
            }
        });
        None
    }

    /// The largest file the page reads as a checkpoint.
    const MAX_PICKED_BYTES: u64 = 1 << 30;

    /// Files whose bytes arrived since the last call, or why one could not be read.
    pub fn picked() -> Vec<Result<ModelSource, String>> {
        PICKED.with(|p| std::mem::take(&mut *p.borrow_mut()))
    }

    /// Download `video` as an animated GIF.
    pub fn export_gif(video: &Video, fps: u32) -> Result<Option<String>, String> {
        let bytes = video
            .upscale(EXPORT_SCALE)
            .gif_bytes(fps)
            .map_err(|e| e.to_string())?;
        download("clip.gif", "image/gif", &bytes)?;
        Ok(Some("downloaded clip.gif".into()))
    }

    /// Download `video`'s frames as one PNG strip (a browser asks before many downloads).
    pub fn export_frames(video: &Video) -> Result<Option<String>, String> {
        let strip = flick_core::video::frame_grid(std::slice::from_ref(video), EXPORT_SCALE);
        let mut bytes = Vec::new();
        strip
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| e.to_string())?;
        download("clip-frames.png", "image/png", &bytes)?;
        Ok(Some(format!(
            "downloaded clip-frames.png ({} frames side by side)",
            video.frames
        )))
    }

    fn download(name: &str, mime: &str, bytes: &[u8]) -> Result<(), String> {
        let js = |e: wasm_bindgen::JsValue| format!("{e:?}");
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
        let options = web_sys::BlobPropertyBag::new();
        options.set_type(mime);
        let blob =
            web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(js)?;
        let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js)?;
        let document = web_sys::window()
            .and_then(|w| w.document())
            .ok_or("no document")?;
        let a: web_sys::HtmlAnchorElement = document
            .create_element("a")
            .map_err(js)?
            .dyn_into()
            .map_err(|_| "not an anchor")?;
        a.set_href(&url);
        a.set_download(name);
        a.click();
        web_sys::Url::revoke_object_url(&url).map_err(js)
    }
}
