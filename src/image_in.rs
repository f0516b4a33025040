//! Reading the images an edit starts from: the init image of image-to-image and
//! inpainting, and the mask. PNG (any colour type, 1 to 16 bits), baseline and
//! progressive JPEG, and DICOM (`crate::dicom::read_image`: MONOCHROME1/2 or RGB, 8/16
//! bits, windowed as its header says). The format is told by the bytes, not the name.
//! Bytes in, no filesystem: the CLI reads files, the page hands over a dropped file.
//!
//! As diffusers' `VaeImageProcessor` sees a PIL image: an init image is RGB in [0, 1]
//! (gray is R = G = B, alpha dropped, as PIL's `convert("RGB")`); a mask is gray by
//! PIL's `convert("L")` (ITU-R 601 luma, `(19595 R + 38470 G + 7471 B + 2^15) >> 16`)
//! binarised at 0.5 (8-bit: 128 repaints, 127 keeps). 16-bit samples are scaled by
//! 65535 (PIL would clip them; a radiograph's 16 bits are worth keeping).

use crate::error::{Error, Result};

/// The largest side read (the pipeline itself takes up to 2048): larger files are
/// refused before their pixels are decoded.
pub const MAX_SIDE: usize = crate::dicom::MAX_SIDE;

/// An init image: RGB in [0, 1], row-major `[height, width, 3]`.
#[derive(Debug)]
pub struct InputImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<f32>,
    /// "PNG", "JPEG" or "DICOM".
    pub format: &'static str,
    /// What the user should be told (a DICOM's first of several frames, a stretch).
    pub notes: Vec<String>,
}

/// A mask: `[height, width]`, true = repaint.
#[derive(Debug)]
pub struct InputMask {
    pub width: usize,
    pub height: usize,
    pub repaint: Vec<bool>,
}

/// Decoded samples before the conversions: `channels` of 1 (gray), 2 (gray + alpha),
/// 3 (RGB) or 4 (RGBA), each in [0, 1].
struct Decoded {
    width: usize,
    height: usize,
    channels: usize,
    samples: Vec<f32>,
    format: &'static str,
    notes: Vec<String>,
}

fn bad(name: &str, message: impl Into<String>) -> Error {
    Error::Image {
        file: name.to_string(),
        message: message.into(),
    }
}

fn check_size(name: &str, width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(
            name,
            format!("the image is {width}x{height}; sides from 1 to {MAX_SIDE} are read"),
        ));
    }
    Ok(())
}

fn decode(name: &str, bytes: &[u8]) -> Result<Decoded> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(name, bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(name, bytes)
    } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        let d = crate::dicom::read_image(bytes).map_err(|m| bad(name, m))?;
        Ok(Decoded {
            width: d.width,
            height: d.height,
            channels: d.channels,
            samples: d.pixels,
            format: "DICOM",
            notes: d.notes,
        })
    } else if bytes.is_empty() {
        Err(bad(name, "the file is empty"))
    } else {
        Err(bad(
            name,
            "not a PNG, JPEG or DICOM file (its first bytes are none of theirs); save the image as PNG",
        ))
    }
}

fn decode_png(name: &str, bytes: &[u8]) -> Result<Decoded> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    // palette -> RGB, low bit depths -> 8, tRNS -> alpha; 16 bits kept
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| {
        bad(
            name,
            format!(
                "not a readable PNG ({e}): the file is damaged or not a PNG; open and re-save it"
            ),
        )
    })?;
    let (w, h) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_size(name, w, h)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(name, "the PNG's image is too large"))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| {
        bad(
            name,
            format!("the PNG's pixels cannot be read ({e}): the file is damaged or truncated"),
        )
    })?;
    buf.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    let samples: Vec<f32> = match frame.bit_depth {
        png::BitDepth::Sixteen => buf
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0)
            .collect(),
        png::BitDepth::Eight => buf.iter().map(|&v| v as f32 / 255.0).collect(),
        d => return Err(bad(name, format!("PNG bit depth {d:?} after expansion"))),
    };
    if samples.len() != w * h * channels {
        return Err(bad(name, "the PNG's pixel data does not match its size"));
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels,
        samples,
        format: "PNG",
        notes: vec![],
    })
}

#[cfg(target_arch = "wasm32")]
fn decode_jpeg(name: &str, _bytes: &[u8]) -> Result<Decoded> {
    Err(bad(
        name,
        "JPEG is read by the browser's own decoder in the page, not here",
    ))
}

#[cfg(not(target_arch = "wasm32"))]
fn decode_jpeg(name: &str, bytes: &[u8]) -> Result<Decoded> {
    let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    dec.read_info().map_err(|e| {
        bad(
            name,
            format!(
                "not a readable JPEG ({e}): the file is damaged or not a JPEG; open and re-save it"
            ),
        )
    })?;
    let info = dec
        .info()
        .ok_or_else(|| bad(name, "the JPEG has no frame header"))?;
    check_size(name, info.width as usize, info.height as usize)?;
    let px = dec.decode().map_err(|e| {
        bad(
            name,
            format!("the JPEG's pixels cannot be read ({e}): the file is damaged or truncated"),
        )
    })?;
    let (channels, samples): (usize, Vec<f32>) = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => (1, px.iter().map(|&v| v as f32 / 255.0).collect()),
        jpeg_decoder::PixelFormat::L16 => (
            1,
            px.chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0)
                .collect(),
        ),
        jpeg_decoder::PixelFormat::RGB24 => (3, px.iter().map(|&v| v as f32 / 255.0).collect()),
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(bad(
                name,
                "the JPEG is CMYK (a print format); save it as RGB or gray",
            ));
        }
    };
    let (w, h) = (info.width as usize, info.height as usize);
    if samples.len() != w * h * channels {
        return Err(bad(name, "the JPEG's pixel data does not match its size"));
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels,
        samples,
        format: "JPEG",
        notes: vec![],
    })
}

/// An init image from a PNG, JPEG or DICOM file's bytes; `name` is how errors name it.
pub fn decode_image(name: &str, bytes: &[u8]) -> Result<InputImage> {
    let d = decode(name, bytes)?;
    let c = d.channels;
    let rgb = d
        .samples
        .chunks_exact(c)
        .flat_map(|p| match c {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Ok(InputImage {
        width: d.width,
        height: d.height,
        rgb,
        format: d.format,
        notes: d.notes,
    })
}

/// A mask from an image file's bytes: white (luma ≥ 0.5) repaints, black keeps.
pub fn decode_mask(name: &str, bytes: &[u8]) -> Result<InputMask> {
    let d = decode(name, bytes)?;
    let c = d.channels;
    let repaint = d
        .samples
        .chunks_exact(c)
        .map(|p| luma(p, c) >= 0.5)
        .collect();
    Ok(InputMask {
        width: d.width,
        height: d.height,
        repaint,
    })
}

/// PIL's `convert("L")` on 8-bit samples (and the same formula, unrounded, on others).
fn luma(p: &[f32], channels: usize) -> f32 {
    if channels < 3 {
        return p[0];
    }
    let to8 = |v: f32| (v * 255.0).round();
    let (r, g, b) = (to8(p[0]), to8(p[1]), to8(p[2]));
    let l = ((19595.0 * r + 38470.0 * g + 7471.0 * b + 32768.0) / 65536.0).floor();
    l / 255.0
}

/// One axis of a separable resize: for each output sample, the source samples it
/// averages and their weights (a triangle filter widened by the scale when shrinking,
/// as PIL's antialiased BILINEAR; plain linear interpolation when enlarging).
fn axis_weights(src: usize, dst: usize, offset: f64, span: f64) -> Vec<(usize, Vec<f64>)> {
    let scale = span / dst as f64;
    let support = scale.max(1.0);
    (0..dst)
        .map(|o| {
            let center = offset + (o as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - center) / support).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // the centre falls outside every sample: take the nearest
                w.iter_mut().for_each(|v| *v = 0.0);
                let near = (center.floor().max(0.0) as usize).min(src - 1).max(lo);
                return (near, vec![1.0]);
            }
            (lo, w)
        })
        .collect()
}

/// Fits an image to a `size x size` square the way diffusers' training scripts prepare
/// RoentGen's images (`Resize(size)` on the shorter side, then `CenterCrop(size)`):
/// the middle square of the image, resampled with an antialiased bilinear filter.
/// `rgb`: `[height, width, 3]` in [0, 1]. The page uses it for a dropped image; the CLI
/// keeps the image's own size.
pub fn fit_square(rgb: &[f32], width: usize, height: usize, size: usize) -> Vec<f32> {
    assert_eq!(rgb.len(), width * height * 3, "an RGB image of its size");
    let side = width.min(height) as f64;
    let (x0, y0) = ((width as f64 - side) / 2.0, (height as f64 - side) / 2.0);
    let wx = axis_weights(width, size, x0, side);
    let wy = axis_weights(height, size, y0, side);
    // rows first: [height, size, 3]
    let mut tmp = vec![0f64; height * size * 3];
    for y in 0..height {
        for (ox, (lo, w)) in wx.iter().enumerate() {
            for c in 0..3 {
                tmp[(y * size + ox) * 3 + c] = w
                    .iter()
                    .enumerate()
                    .map(|(k, &wk)| wk * rgb[(y * width + lo + k) * 3 + c] as f64)
                    .sum();
            }
        }
    }
    let mut out = vec![0f32; size * size * 3];
    for (oy, (lo, w)) in wy.iter().enumerate() {
        for ox in 0..size {
            for c in 0..3 {
                let v: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(k, &wk)| wk * tmp[((lo + k) * size + ox) * 3 + c])
                    .sum();
                out[(oy * size + ox) * 3 + c] = v.clamp(0.0, 1.0) as f32;
            }
        }
    }
    out
}

/// Fits a mask (`[height, width]`, true = in the mask) to a `size x size` square as
/// [`fit_square`] fits its image (the middle square, resized), by nearest neighbour so
/// that it stays a mask: output pixel (x, y) takes the source pixel under its centre.
/// At the image's own square size it is the mask itself.
pub fn fit_mask(mask: &[bool], width: usize, height: usize, size: usize) -> Vec<bool> {
    assert_eq!(mask.len(), width * height, "a mask of its size");
    let side = width.min(height) as f64;
    let (x0, y0) = ((width as f64 - side) / 2.0, (height as f64 - side) / 2.0);
    let at = |o: usize, offset: f64, n: usize| {
        ((offset + (o as f64 + 0.5) * side / size as f64).floor() as usize).min(n - 1)
    };
    (0..size * size)
        .map(|i| mask[at(i / size, y0, height) * width + at(i % size, x0, width)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_mask_crops_the_middle_by_nearest_neighbour() {
        // a square mask at its own size, and at 4x (each pixel a 4x4 block)
        let m: Vec<bool> = (0..16).map(|i| i % 3 == 0).collect();
        assert_eq!(fit_mask(&m, 4, 4, 4), m);
        let big = fit_mask(&m, 4, 4, 16);
        for y in 0..16 {
            for x in 0..16 {
                assert_eq!(big[y * 16 + x], m[(y / 4) * 4 + x / 4], "({x}, {y})");
            }
        }
        // 16 sampled at pixel 4i + 2 gives the mask back (the page's canvas round trip)
        let back: Vec<bool> = (0..16)
            .map(|i| big[(4 * (i / 4) + 2) * 16 + 4 * (i % 4) + 2])
            .collect();
        assert_eq!(back, m);
        // a 4x2 mask whose columns 1 and 2 are the middle square
        let wide = [false, true, false, true, false, true, false, true];
        assert_eq!(fit_mask(&wide, 4, 2, 2), [true, false, true, false]);
    }

    #[test]
    fn fit_square_crops_the_middle_and_averages() {
        // 4x2 image: columns 0..4 valued 0, 0.25, 0.75, 1 in every channel; the middle
        // 2x2 square is columns 1 and 2
        let rgb: Vec<f32> = (0..2)
            .flat_map(|_| [0.0, 0.25, 0.75, 1.0])
            .flat_map(|v| [v; 3])
            .collect();
        let same = fit_square(&rgb, 4, 2, 2);
        assert_eq!(same.len(), 12);
        for y in 0..2 {
            assert!((same[(y * 2) * 3] - 0.25).abs() < 1e-6, "{same:?}");
            assert!((same[(y * 2 + 1) * 3] - 0.75).abs() < 1e-6, "{same:?}");
        }
        // shrinking the square to one pixel averages it
        let one = fit_square(&rgb, 4, 2, 1);
        assert!((one[0] - 0.5).abs() < 1e-6, "{one:?}");
        // a flat image stays flat at any size
        let flat = vec![0.3f32; 10 * 7 * 3];
        for size in [3, 7, 16] {
            let f = fit_square(&flat, 10, 7, size);
            assert!(f.iter().all(|&v| (v - 0.3).abs() < 1e-6), "{size}");
        }
    }

    fn png(color: png::ColorType, depth: png::BitDepth, w: u32, h: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn png_kinds_become_rgb() {
        let gray = png(
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            2,
            1,
            &[0, 255],
        );
        assert_eq!(
            decode_image("g", &gray).unwrap().rgb,
            vec![0., 0., 0., 1., 1., 1.]
        );
        let g16 = png(
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            1,
            1,
            &[0x80, 0x00],
        );
        let v = decode_image("g16", &g16).unwrap().rgb[0];
        assert!((v - 32768.0 / 65535.0).abs() < 1e-7);
        let rgba = png(
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            1,
            1,
            &[255, 0, 51, 7],
        );
        assert_eq!(decode_image("a", &rgba).unwrap().rgb, vec![1.0, 0.0, 0.2]);
        let bits = png(
            png::ColorType::Grayscale,
            png::BitDepth::One,
            8,
            1,
            &[0b1000_0001],
        );
        let m = decode_mask("m", &bits).unwrap();
        assert_eq!(
            m.repaint,
            vec![true, false, false, false, false, false, false, true]
        );
    }

    #[test]
    fn mask_threshold_is_pils() {
        let m = png(
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            2,
            1,
            &[127, 128],
        );
        assert_eq!(decode_mask("m", &m).unwrap().repaint, vec![false, true]);
        // pure red is luma 76: keeps; (255, 128, 0) is 151: repaints
        let m = png(
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            2,
            1,
            &[255, 0, 0, 255, 128, 0],
        );
        assert_eq!(decode_mask("m", &m).unwrap().repaint, vec![false, true]);
    }

    #[test]
    fn broken_files_are_sentences() {
        let good = png(
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            4,
            4,
            &[9; 16],
        );
        for (bytes, says) in [
            (&good[..good.len() - 20], "damaged or truncated"),
            (&good[..30], "not a readable PNG"),
            (&b"GIF89a...."[..], "not a PNG, JPEG or DICOM"),
            (&[][..], "empty"),
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 2][..], "JPEG"),
        ] {
            let e = decode_image("x.png", bytes).unwrap_err().to_string();
            assert!(e.starts_with("x.png: ") && e.contains(says), "{e}");
        }
    }
}
