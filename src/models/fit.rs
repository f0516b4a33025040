//! Whether a generation's maps fit the GPU's bindings, decided before anything runs.
//!
//! The UNet and the VAE's encoder keep each map in one storage binding; the VAE's
//! decoder splits its maps into channel slices ([`crate::ops::channel_slices`]) except
//! at its lowest resolution. A size or count whose maps do not fit used to panic in
//! the middle of a generation (natively at large counts, in a browser, whose bindings
//! are 128 MiB, from a few images at 512x512 on); this says so first, with the size
//! of the map, the limit, and what to change.

use crate::error::{Error, Result};
use crate::models::config::{UNetConfig, VaeConfig};
use crate::ops::channel_slices;

/// The device's limits on one buffer, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct BufferLimits {
    /// `maxStorageBufferBindingSize`.
    pub binding: u64,
    /// `maxBufferSize`.
    pub buffer: u64,
}

impl BufferLimits {
    pub fn of(gpu: &crate::gpu::Gpu) -> BufferLimits {
        BufferLimits {
            binding: gpu.info.max_storage_binding,
            buffer: gpu.info.max_buffer_size,
        }
    }

    /// The largest map one binding holds, and the limit's WebGPU name.
    fn most(&self) -> (usize, &'static str) {
        if self.buffer < self.binding {
            (self.buffer as usize, "maxBufferSize")
        } else {
            (self.binding as usize, "maxStorageBufferBindingSize")
        }
    }
}

/// A generation's shape: `images` at once (twice that many UNet rows with classifier-
/// free guidance), `width x height` pixels, and whether an init image is encoded.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub images: usize,
    pub guided: bool,
    pub width: usize,
    pub height: usize,
    pub encode: bool,
}

/// WebGPU's `maxComputeWorkgroupsPerDimension` (every device's, browsers included).
const MAX_WORKGROUPS: usize = 65535;

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", (bytes as f64 / (1u64 << 20) as f64).ceil())
}

/// The sides of each level of a map halved `levels - 1` times (rounded up: an upper
/// bound for every padding the UNet and VAE use).
fn levels(h: usize, w: usize, n: usize) -> Vec<usize> {
    (0..n)
        .scan((h, w), |s, _| {
            let area = s.0 * s.1;
            *s = (s.0.div_ceil(2), s.1.div_ceil(2));
            Some(area)
        })
        .collect()
}

/// Checks that every map of `job` fits `limits` (see the module's doc).
pub fn check(limits: BufferLimits, unet: &UNetConfig, vae: &VaeConfig, job: Job) -> Result<()> {
    let (limit, name) = limits.most();
    let f = vae.scale_factor();
    let (lh, lw) = (job.height / f, job.width / f);
    let size = format!("{}x{}", job.width, job.height);
    let too_big = |bytes: usize, part: &str, change: &str| {
        Error::Input(format!(
            "{size} needs a {} map in {part}, but this GPU holds at most {} in one buffer ({name}): {change}",
            mib(bytes),
            mib(limit),
        ))
    };

    // 1. the VAE's encoder (an edit's init image, one at a time; it runs first):
    //    unsliced maps of each level's widths, the mid block's single-head attention
    //    at the lowest level
    let vch = &vae.block_out_channels;
    let vn = vch.len();
    let areas = levels(job.height, job.width, vn);
    if job.encode {
        for (i, &area) in areas.iter().enumerate() {
            let mut per_pixel = vch[i].max(vch[i.saturating_sub(1)]);
            if i == vn - 1 {
                per_pixel = per_pixel.max(64).max(2 * vae.latent_channels);
            }
            let bytes = area.saturating_mul(per_pixel).saturating_mul(4);
            if bytes > limit {
                return Err(too_big(
                    bytes,
                    "the VAE's encoder",
                    "edit a smaller image (resize it: RoentGen works at 512x512)",
                ));
            }
        }
    }

    // 2. the UNet: one map per level at most 8 x the level's width (GEGLU's
    //    projection), 64 x its heads (the chunked attention's scores for 64 queries),
    //    or the widths of a skip concatenation
    let rows = job.images * if job.guided { 2 } else { 1 };
    let ch = &unet.block_out_channels;
    let n = ch.len();
    for (i, area) in levels(lh, lw, n).into_iter().enumerate() {
        let attention = unet.down_block_types[i] == "CrossAttnDownBlock2D"
            || unet.up_block_types[n - 1 - i] == "CrossAttnUpBlock2D"
            || i == n - 1;
        let near = ch[i.saturating_sub(1)..=(i + 1).min(n - 1)]
            .iter()
            .max()
            .copied()
            .unwrap_or(ch[i]);
        let mut per_pixel = 2 * near;
        if attention {
            per_pixel = per_pixel.max(8 * ch[i]).max(64 * unet.heads(i));
        }
        let bytes = rows
            .saturating_mul(area)
            .saturating_mul(per_pixel)
            .saturating_mul(4);
        // the chunked attention's GEMMs run one workgroup row per (image, head)
        let dispatch = rows.saturating_mul(unet.heads(i));
        if attention && dispatch > MAX_WORKGROUPS {
            return Err(Error::Input(format!(
                "{} images at once run {dispatch} attention heads side by side in the UNet (block {i}: {} heads), more than the {MAX_WORKGROUPS} a GPU dispatch allows: ask for fewer images at once",
                job.images,
                unet.heads(i)
            )));
        }
        if bytes > limit {
            let (at_once, change) = if job.images == 1 {
                ("one image".to_string(), "generate a smaller image")
            } else {
                (
                    format!("{} images at once", job.images),
                    "ask for fewer images at once or a smaller image",
                )
            };
            return Err(too_big(
                bytes,
                &format!("the UNet (block {i}) for {at_once}"),
                change,
            ));
        }
    }

    // 3. the VAE's decoder: maps split into channel slices, but the mid block's
    //    attention takes its map whole
    let top = vch[vn - 1];
    let latent = lh * lw;
    let decoder = "the VAE's decoder";
    let smaller = "generate a smaller image";
    let whole = latent.saturating_mul(top.max(64)).saturating_mul(4);
    if whole > limit {
        return Err(too_big(whole, decoder, smaller));
    }
    let mut maps = vec![(latent, top)];
    for i in 0..vn {
        let area = latent.saturating_mul(1 << (2 * i));
        maps.push((area, vch[vn - 1 - i]));
        if i + 1 < vn {
            maps.push((area.saturating_mul(4), vch[vn - 1 - i]));
        }
    }
    maps.push((areas[0], vae.out_channels));
    for (area, channels) in maps {
        let bytes = area.saturating_mul(channels).saturating_mul(4);
        if channel_slices(bytes, channels, limit).is_none() {
            return Err(too_big(bytes, decoder, smaller));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::presets::{SD14_UNET, SD14_VAE};

    const BROWSER: BufferLimits = BufferLimits {
        binding: 128 << 20,
        buffer: 256 << 20,
    };

    fn job(images: usize, side: usize, encode: bool) -> Job {
        Job {
            images,
            guided: true,
            width: side,
            height: side,
            encode,
        }
    }

    #[test]
    fn roentgen_at_512_fits_a_browser_and_large_requests_are_refused() {
        let unet = UNetConfig::from_json("u", SD14_UNET).unwrap();
        let vae = VaeConfig::from_json("v", SD14_VAE).unwrap();
        // what the page runs: one image at 512x512, text-to-image and edits
        check(BROWSER, &unet, &vae, job(1, 512, false)).unwrap();
        check(BROWSER, &unet, &vae, job(1, 512, true)).unwrap();
        let e = check(BROWSER, &unet, &vae, job(8, 512, false))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("8 images at once") && e.contains("fewer images"),
            "{e}"
        );
        let e = check(BROWSER, &unet, &vae, job(1, 1024, true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAE's encoder"), "{e}");
        // natively (4 GiB bindings) one 2048x2048 image fits
        let native = BufferLimits {
            binding: u32::MAX as u64,
            buffer: u64::MAX,
        };
        check(native, &unet, &vae, job(1, 2048, true)).unwrap();
        // one image too large for a browser: the size is what to change
        let e = check(BROWSER, &unet, &vae, job(1, 1024, false))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1024x1024")
                && e.contains("for one image")
                && e.contains("smaller image")
                && !e.contains("fewer"),
            "{e}"
        );
        // 1024 one-wide heads, 64 images (128 rows with guidance): past a dispatch
        let wide = UNetConfig::from_json(
            "u",
            r#"{"block_out_channels":[1024],"down_block_types":["CrossAttnDownBlock2D"],
            "up_block_types":["CrossAttnUpBlock2D"],"attention_head_dim":1024}"#,
        )
        .unwrap();
        check(native, &wide, &vae, job(1, 64, false)).unwrap();
        let e = check(native, &wide, &vae, job(64, 64, false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("131072") && e.contains("fewer images"), "{e}");
    }
}
