//! The init images and masks of an edit read as the reference libraries read them:
//! tests/fixtures/images/ (tools/make_image_fixtures.py) holds JPEGs written and decoded
//! by Pillow (libjpeg-turbo), DICOMs written by pydicom and windowed by its
//! `apply_modality_lut` + `apply_voi_lut`, and a soft colour mask converted as diffusers'
//! mask processor does. No GPU.

mod common;

use roentgen_web::error::Error;
use roentgen_web::image_in::{decode_image, decode_mask};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    common::fixture_tensor("images/expected.safetensors", name)
}

/// (largest, mean) absolute difference.
fn diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let mean = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / got.len() as f32;
    (max, mean)
}

fn check(name: &str, format: &str, max_tol: f32, mean_tol: f32) {
    let img = decode_image(name, &fixture(name)).unwrap();
    let (shape, want) = expected(name);
    assert_eq!(vec![img.height, img.width, 3], shape, "{name}: size");
    assert_eq!(img.format, format);
    let (max, mean) = diff(&img.rgb, &want);
    eprintln!("{name}: largest difference {max:.2e}, mean {mean:.2e}");
    assert!(
        max <= max_tol && mean <= mean_tol,
        "{name}: largest difference {max} (tolerance {max_tol}), mean {mean} (tolerance {mean_tol})"
    );
}

/// JPEG decoders may round their inverse DCT and chroma upsampling differently (the
/// standard allows it: ISO/IEC 10918-2's accuracy test is +-1 per sample after the
/// IDCT). Measured against libjpeg-turbo (Pillow 13.0.0) on 2026-12-03: gray 1/255
/// largest and 0.005/255 mean; 4:2:0 colour 2/255 and 0.145/255 (the chroma
/// upsampling); progressive 2/255 and 0.023/255. A wrong colour conversion or a missing
/// upsampling step is tens of levels off.
const JPEG_MAX: f32 = 2.0 / 255.0 + 1e-6;
const JPEG_MEAN: f32 = 0.25 / 255.0;

#[test]
fn jpeg_decodes_as_pillow() {
    check("gray.jpg", "JPEG", JPEG_MAX, JPEG_MEAN);
    check("color420.jpg", "JPEG", JPEG_MAX, JPEG_MEAN);
    check("progressive.jpg", "JPEG", JPEG_MAX, JPEG_MEAN);
}

/// The windowing is computed in f64 and stored as f32, pydicom's in float64: only the
/// f32 rounding could differ (measured: 0, both files).
const DICOM_TOL: f32 = 1e-6;

#[test]
fn dicom_windows_as_pydicom() {
    check("mono1_12bit.dcm", "DICOM", DICOM_TOL, DICOM_TOL);
    check("mono2_signed_sigmoid.dcm", "DICOM", DICOM_TOL, DICOM_TOL);
}

#[test]
fn soft_colour_mask_binarised_as_diffusers() {
    let mask = decode_mask("soft_mask.png", &fixture("soft_mask.png")).unwrap();
    let (shape, want) = expected("soft_mask.png");
    assert_eq!(vec![mask.height, mask.width], shape);
    let got: Vec<f32> = mask.repaint.iter().map(|&r| r as u8 as f32).collect();
    let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        wrong, 0,
        "{wrong} mask pixels differ from PIL's convert(\"L\") >= 0.5"
    );
    assert!(want.contains(&1.0) && want.contains(&0.0));
}

/// Each broken file is refused with a sentence naming it, never a panic.
#[test]
fn broken_images_are_refused_with_sentences() {
    let jpeg = fixture("color420.jpg");
    let dcm = fixture("mono1_12bit.dcm");
    let png = fixture("soft_mask.png");
    let mut flipped_png = png.clone();
    for b in &mut flipped_png[40..60] {
        *b ^= 0x5a;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.png", vec![], "empty"),
        (
            "notes.txt",
            b"Small right-sided pleural effusion.".to_vec(),
            "PNG, JPEG or DICOM",
        ),
        ("cut.jpg", jpeg[..jpeg.len() / 2].to_vec(), "JPEG"),
        ("header.jpg", jpeg[..20].to_vec(), "damaged"),
        ("cut.dcm", dcm[..dcm.len() - 100].to_vec(), "truncated"),
        ("meta.dcm", dcm[..200].to_vec(), "truncated"),
        ("flipped.png", flipped_png, "damaged"),
        ("cut.png", png[..png.len() - 30].to_vec(), "PNG"),
    ];
    for (name, bytes, says) in cases {
        for result in [
            decode_image(name, &bytes).map(|_| ()),
            decode_mask(name, &bytes).map(|_| ()),
        ] {
            match result {
                Err(e @ Error::Image { .. }) => {
                    let text = e.to_string();
                    assert!(text.starts_with(name), "{name}: {text}");
                    assert!(text.contains(says), "{name}: {text} (should say {says:?})");
                    eprintln!("{text}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
