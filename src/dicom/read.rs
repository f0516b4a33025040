//! Reading a radiograph out of a DICOM file, for image-to-image and inpainting: a
//! PS3.10 file (128-byte preamble, `DICM`), uncompressed (Implicit or Explicit VR Little
//! Endian), one frame of MONOCHROME1, MONOCHROME2 or RGB, 8 or 16 bits allocated,
//! signed or unsigned. The pixels go through the modality LUT (Rescale Slope and
//! Intercept) and the first VOI window of the header (Window Center / Width with VOI LUT
//! Function LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2), MONOCHROME1 is inverted,
//! and the result is gray in [0, 1] as a viewer would show it.
//!
//! Hand-written like the writer: a flat walk over the top-level elements, sequences
//! skipped (to a bounded depth), every length checked against the bytes that are there
//! (the walk never allocates from a length it has not checked). Compressed transfer
//! syntaxes are refused with a sentence saying how to decompress.

/// An element's header: (group, element) tag, VR, value length.
type Element = ((u16, u16), [u8; 2], u32);

/// What a DICOM file's first frame shows, in display values.
#[derive(Debug)]
pub struct DicomImage {
    pub width: usize,
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// `[height, width, channels]`, in [0, 1].
    pub pixels: Vec<f32>,
    /// Things a user should know (the first of several frames, no window in the header).
    pub notes: Vec<String>,
}

/// Largest side we read (a CXR detector is ~3000 px): bigger is refused before any
/// pixel buffer is made.
pub const MAX_SIDE: usize = 16384;
/// Sequences nested deeper than this are refused (a hostile file could nest forever).
const MAX_DEPTH: usize = 16;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// The header attributes the pixels need (top level only).
#[derive(Default)]
struct Header {
    transfer_syntax: Option<String>,
    samples: Option<u16>,
    photometric: Option<String>,
    planar: Option<u16>,
    frames: Option<String>,
    rows: Option<u16>,
    columns: Option<u16>,
    bits_allocated: Option<u16>,
    bits_stored: Option<u16>,
    high_bit: Option<u16>,
    pixel_representation: Option<u16>,
    window_center: Option<String>,
    window_width: Option<String>,
    voi_function: Option<String>,
    rescale_intercept: Option<String>,
    rescale_slope: Option<String>,
    /// Offset and length of Pixel Data's value in the file.
    pixel_data: Option<(usize, usize)>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    explicit: bool,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "the file ends inside an element (at byte {} of {}): it is truncated",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// One element's tag, VR (explicit files only) and length.
    fn element(&mut self) -> Result<Element, String> {
        let tag = (self.u16()?, self.u16()?);
        // items and delimiters have no VR, in either syntax
        if tag.0 == 0xFFFE {
            return Ok((tag, *b"  ", self.u32()?));
        }
        if !self.explicit {
            return Ok((tag, *b"  ", self.u32()?));
        }
        let vr = self.take(2)?;
        let vr = [vr[0], vr[1]];
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let len = if long {
            self.take(2)?;
            self.u32()?
        } else {
            self.u16()? as u32
        };
        Ok((tag, vr, len))
    }

    /// Skips a sequence's items after its header (`len` defined or undefined).
    fn skip_sequence(&mut self, len: u32, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "sequences nest more than {MAX_DEPTH} deep: this is not an image file we can read"
            ));
        }
        if len != UNDEFINED {
            self.take(len as usize)?;
            return Ok(());
        }
        loop {
            let (tag, _, item_len) = self.element()?;
            match tag {
                (0xFFFE, 0xE0DD) => return Ok(()), // sequence delimitation
                (0xFFFE, 0xE000) => {
                    if item_len == UNDEFINED {
                        self.skip_item(depth + 1)?;
                    } else {
                        self.take(item_len as usize)?;
                    }
                }
                _ => {
                    return Err(format!(
                        "expected an item in a sequence at byte {}, found ({:04X},{:04X})",
                        self.pos, tag.0, tag.1
                    ));
                }
            }
        }
    }

    /// Skips the elements of an undefined-length item up to its delimiter.
    fn skip_item(&mut self, depth: usize) -> Result<(), String> {
        loop {
            let (tag, vr, len) = self.element()?;
            if tag == (0xFFFE, 0xE00D) {
                return Ok(());
            }
            if &vr == b"SQ" || len == UNDEFINED {
                self.skip_sequence(len, depth + 1)?;
            } else {
                self.take(len as usize)?;
            }
        }
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

fn us(v: &[u8]) -> Option<u16> {
    (v.len() >= 2).then(|| u16::from_le_bytes([v[0], v[1]]))
}

/// Reads the header: the file meta group, then the data set's top level.
fn header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(
            "not a DICOM file: no `DICM` after the 128-byte preamble (a PS3.10 file is needed; re-export it from the viewer as DICOM)"
                .into(),
        );
    }
    let mut h = Header::default();
    // the file meta group is always Explicit VR Little Endian
    let mut r = Reader {
        bytes,
        pos: 132,
        explicit: true,
    };
    while r.pos + 4 <= bytes.len() && u16::from_le_bytes([bytes[r.pos], bytes[r.pos + 1]]) == 2 {
        let (tag, _, len) = r.element()?;
        if len == UNDEFINED {
            return Err("an undefined length in the file meta group".into());
        }
        let v = r.take(len as usize)?;
        if tag == (0x0002, 0x0010) {
            h.transfer_syntax = Some(text(v));
        }
    }
    let ts = h
        .transfer_syntax
        .clone()
        .ok_or("the file meta group has no Transfer Syntax UID (0002,0010): the file is damaged")?;
    r.explicit = match ts.as_str() {
        EXPLICIT_LE => true,
        IMPLICIT_LE => false,
        other => return Err(unsupported_syntax(other)),
    };
    while r.pos < bytes.len() {
        let (tag, vr, len) = r.element()?;
        if tag == (0x7FE0, 0x0010) {
            if len == UNDEFINED {
                return Err(
                    "the pixel data is encapsulated (compressed) although the transfer syntax says uncompressed: the file is damaged"
                        .into(),
                );
            }
            let start = r.pos;
            r.take(len as usize)?;
            h.pixel_data = Some((start, len as usize));
            break; // nothing after the pixels matters
        }
        if &vr == b"SQ" || len == UNDEFINED {
            r.skip_sequence(len, 1)?;
            continue;
        }
        let v = r.take(len as usize)?;
        match tag {
            (0x0028, 0x0002) => h.samples = us(v),
            (0x0028, 0x0004) => h.photometric = Some(text(v)),
            (0x0028, 0x0006) => h.planar = us(v),
            (0x0028, 0x0008) => h.frames = Some(text(v)),
            (0x0028, 0x0010) => h.rows = us(v),
            (0x0028, 0x0011) => h.columns = us(v),
            (0x0028, 0x0100) => h.bits_allocated = us(v),
            (0x0028, 0x0101) => h.bits_stored = us(v),
            (0x0028, 0x0102) => h.high_bit = us(v),
            (0x0028, 0x0103) => h.pixel_representation = us(v),
            (0x0028, 0x1050) => h.window_center = Some(text(v)),
            (0x0028, 0x1051) => h.window_width = Some(text(v)),
            (0x0028, 0x1052) => h.rescale_intercept = Some(text(v)),
            (0x0028, 0x1053) => h.rescale_slope = Some(text(v)),
            (0x0028, 0x1056) => h.voi_function = Some(text(v)),
            _ => {}
        }
    }
    Ok(h)
}

fn unsupported_syntax(uid: &str) -> String {
    let what = match uid {
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian (retired)",
        "1.2.840.10008.1.2.1.99" => "Deflated Explicit VR Little Endian",
        u if u.starts_with("1.2.840.10008.1.2.4.") => "JPEG-family compression",
        "1.2.840.10008.1.2.5" => "RLE compression",
        _ => "a transfer syntax we do not read",
    };
    format!(
        "its transfer syntax {uid} is {what}; only uncompressed little-endian DICOM is read: decompress it first (e.g. `gdcmconv --raw in.dcm out.dcm` or `dcmdjpeg in.dcm out.dcm`)"
    )
}

/// The first number of a multi-valued DS (`"40\\400"` → 40).
fn first_number(s: &Option<String>, what: &str) -> Result<Option<f64>, String> {
    let Some(s) = s else { return Ok(None) };
    let first = s.split('\\').next().unwrap_or("").trim();
    if first.is_empty() {
        return Ok(None);
    }
    match first.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(format!("its {what} `{s}` is not a number")),
    }
}

/// The pixels of a DICOM file's first frame as display values in [0, 1].
pub fn read_image(bytes: &[u8]) -> Result<DicomImage, String> {
    let h = header(bytes)?;
    let need = |v: Option<u16>, what: &str| {
        v.ok_or_else(|| format!("the header has no {what}: this is not an image, or it is damaged"))
    };
    let rows = need(h.rows, "Rows (0028,0010)")? as usize;
    let cols = need(h.columns, "Columns (0028,0011)")? as usize;
    let (offset, len) = h
        .pixel_data
        .ok_or("the file has no Pixel Data (7FE0,0010): it holds no image (a report or a structured document?)")?;
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(format!(
            "its image is {cols}x{rows}; sides from 1 to {MAX_SIDE} are read"
        ));
    }
    let samples = h.samples.unwrap_or(1) as usize;
    let photometric = h
        .photometric
        .clone()
        .unwrap_or_else(|| "MONOCHROME2".into());
    match (photometric.as_str(), samples) {
        ("MONOCHROME1" | "MONOCHROME2", 1) | ("RGB", 3) => {}
        (p, s) => {
            return Err(format!(
                "its Photometric Interpretation is {p} with {s} samples per pixel; MONOCHROME1, MONOCHROME2 and RGB are read"
            ));
        }
    }
    let bits = need(h.bits_allocated, "Bits Allocated (0028,0100)")? as usize;
    if bits != 8 && bits != 16 {
        return Err(format!(
            "it has {bits} bits allocated per sample; 8 and 16 are read"
        ));
    }
    let stored = h.bits_stored.unwrap_or(bits as u16) as usize;
    let high = h
        .high_bit
        .map(|b| b as usize)
        .unwrap_or(stored.saturating_sub(1));
    if stored == 0 || stored > bits || high >= bits || high + 1 < stored {
        return Err(format!(
            "its bits stored ({stored}) and high bit ({high}) do not fit {bits} bits allocated"
        ));
    }
    let signed = h.pixel_representation == Some(1);
    let mut notes = Vec::new();
    if let Some(f) = &h.frames
        && let Ok(n) = f.trim().parse::<u64>()
        && n > 1
    {
        notes.push(format!("it has {n} frames; the first is used"));
    }
    let per_frame = rows * cols * samples * bits / 8;
    if len < per_frame {
        return Err(format!(
            "its pixel data has {len} bytes, fewer than the {per_frame} a {cols}x{rows} frame needs: the file is truncated or damaged"
        ));
    }
    let raw = &bytes[offset..offset + per_frame];
    // stored values, bits masked and sign-extended
    let shift = high + 1 - stored;
    let value = |i: usize| -> f64 {
        let v = if bits == 8 {
            raw[i] as u32
        } else {
            u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]) as u32
        };
        let v = (v >> shift) & ((1u32 << stored) - 1);
        if signed && v & (1 << (stored - 1)) != 0 {
            v as f64 - (1u64 << stored) as f64
        } else {
            v as f64
        }
    };
    let n = rows * cols * samples;
    if photometric == "RGB" {
        // colour: no VOI, samples scaled by their range; planar 1 stores R, G, B planes
        let max = ((1u64 << stored) - 1) as f64;
        let planar = h.planar == Some(1);
        let px = rows * cols;
        let pixels = (0..n)
            .map(|i| {
                let (p, c) = (i / 3, i % 3);
                let src = if planar { c * px + p } else { i };
                (value(src) / max).clamp(0.0, 1.0) as f32
            })
            .collect();
        return Ok(DicomImage {
            width: cols,
            height: rows,
            channels: 3,
            pixels,
            notes,
        });
    }
    let slope = first_number(&h.rescale_slope, "Rescale Slope (0028,1053)")?.unwrap_or(1.0);
    let intercept =
        first_number(&h.rescale_intercept, "Rescale Intercept (0028,1052)")?.unwrap_or(0.0);
    let modality: Vec<f64> = (0..n).map(|i| value(i) * slope + intercept).collect();
    let center = first_number(&h.window_center, "Window Center (0028,1050)")?;
    let width = first_number(&h.window_width, "Window Width (0028,1051)")?;
    let function = h.voi_function.clone().unwrap_or_else(|| "LINEAR".into());
    let mut display: Vec<f64> = match (center, width) {
        (Some(c), Some(w)) if w >= 1.0 || (function != "LINEAR" && w > 0.0) => {
            match function.as_str() {
                // PS3.3 C.11.2.1.2.1
                "LINEAR" => modality
                    .iter()
                    .map(|&x| ((x - (c - 0.5)) / (w - 1.0) + 0.5).clamp(0.0, 1.0))
                    .collect(),
                // C.11.2.1.3.2
                "LINEAR_EXACT" => modality
                    .iter()
                    .map(|&x| ((x - c) / w + 0.5).clamp(0.0, 1.0))
                    .collect(),
                // C.11.2.1.3.1
                "SIGMOID" => modality
                    .iter()
                    .map(|&x| 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()))
                    .collect(),
                other => {
                    return Err(format!(
                        "its VOI LUT Function is {other}; LINEAR, LINEAR_EXACT and SIGMOID are read"
                    ));
                }
            }
        }
        _ => {
            let plain8 = bits == 8 && stored == 8 && !signed && slope == 1.0 && intercept == 0.0;
            if plain8 {
                // 8-bit display values already
                modality.iter().map(|&x| x / 255.0).collect()
            } else {
                let (lo, hi) = modality
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                        (l.min(x), h.max(x))
                    });
                notes.push(format!(
                    "its header gives no usable window; its values {lo}..{hi} are stretched to black..white"
                ));
                let span = (hi - lo).max(f64::MIN_POSITIVE);
                modality.iter().map(|&x| (x - lo) / span).collect()
            }
        }
    };
    if photometric == "MONOCHROME1" {
        // low values are white
        for v in &mut display {
            *v = 1.0 - *v;
        }
    }
    Ok(DicomImage {
        width: cols,
        height: rows,
        channels: 1,
        pixels: display.into_iter().map(|v| v as f32).collect(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Explicit VR LE file with the given (group, element, VR, value)s.
    fn file(ts: &str, elements: &[(u16, u16, &[u8; 2], Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        let mut ts = ts.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        out.extend_from_slice(&[2, 0, 0x10, 0, b'U', b'I']);
        out.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        out.extend_from_slice(&ts);
        let explicit = ts.starts_with(EXPLICIT_LE.as_bytes());
        for (g, e, vr, v) in elements {
            out.extend_from_slice(&g.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
            if explicit {
                out.extend_from_slice(*vr);
                if matches!(*vr, b"OB" | b"OW" | b"SQ") {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                } else {
                    out.extend_from_slice(&(v.len() as u16).to_le_bytes());
                }
            } else {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(v);
        }
        out
    }

    fn us_(v: u16) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    fn mono16(
        ts: &str,
        photometric: &str,
        extra: Vec<(u16, u16, &'static [u8; 2], Vec<u8>)>,
        px: &[u16],
    ) -> Vec<u8> {
        let mut el: Vec<(u16, u16, &[u8; 2], Vec<u8>)> = vec![
            (0x0028, 0x0002, b"US", us_(1)),
            (0x0028, 0x0004, b"CS", photometric.as_bytes().to_vec()),
            (0x0028, 0x0010, b"US", us_(1)),
            (0x0028, 0x0011, b"US", us_(px.len() as u16)),
            (0x0028, 0x0100, b"US", us_(16)),
            (0x0028, 0x0101, b"US", us_(12)),
            (0x0028, 0x0102, b"US", us_(11)),
            (0x0028, 0x0103, b"US", us_(0)),
        ];
        el.extend(extra);
        el.push((
            0x7FE0,
            0x0010,
            b"OW",
            px.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        file(ts, &el)
    }

    #[test]
    fn windows_as_ps3_3_says() {
        // center 2048, width 1025 (LINEAR): 1535.5 .. 2559.5 maps to 0 .. 1
        let win = vec![
            (0x0028, 0x1050, b"DS", b"2048\\100".to_vec()),
            (0x0028, 0x1051, b"DS", b"1025".to_vec()),
        ];
        let f = mono16(
            EXPLICIT_LE,
            "MONOCHROME2",
            win.clone(),
            &[0, 1535, 2047, 2048, 4095],
        );
        let img = read_image(&f).unwrap();
        let want = [
            0.0,
            0.0,
            (2047.0 - 2047.5) / 1024.0 + 0.5,
            (2048.0 - 2047.5) / 1024.0 + 0.5,
            1.0,
        ];
        for (a, b) in img.pixels.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{:?}", img.pixels);
        }
        // MONOCHROME1 inverts, and the implicit syntax reads the same
        let f = mono16(IMPLICIT_LE, "MONOCHROME1", win, &[0, 4095]);
        assert_eq!(read_image(&f).unwrap().pixels, vec![1.0, 0.0]);
    }

    #[test]
    fn no_window_stretches_and_says_so() {
        let f = mono16(EXPLICIT_LE, "MONOCHROME2", vec![], &[100, 300, 500]);
        let img = read_image(&f).unwrap();
        assert_eq!(img.pixels, vec![0.0, 0.5, 1.0]);
        assert!(img.notes[0].contains("stretched"), "{:?}", img.notes);
    }

    #[test]
    fn refuses_with_sentences() {
        let f = mono16("1.2.840.10008.1.2.4.50", "MONOCHROME2", vec![], &[0]);
        assert!(read_image(&f).unwrap_err().contains("gdcmconv"));
        let f = mono16(EXPLICIT_LE, "YBR_FULL", vec![], &[0]);
        assert!(read_image(&f).unwrap_err().contains("Photometric"));
        let mut f = mono16(EXPLICIT_LE, "MONOCHROME2", vec![], &[0, 1, 2, 3]);
        f.truncate(f.len() - 3);
        assert!(read_image(&f).unwrap_err().contains("truncated"));
        assert!(read_image(b"hello").unwrap_err().contains("not a DICOM"));
        // a sequence nested without end is refused, not followed forever
        let mut deep = Vec::new();
        for _ in 0..40 {
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            deep.extend_from_slice(&UNDEFINED.to_le_bytes());
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            deep.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        let mut f = file(EXPLICIT_LE, &[]);
        f.extend_from_slice(&deep);
        assert!(read_image(&f).unwrap_err().contains("nest"));
    }
}
