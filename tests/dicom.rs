//! DICOM export against pydicom. tools/check_dicom.py read
//! tests/fixtures/dicom/synthetic.dcm (written by `roentgen generate --output x.dcm`)
//! with pydicom, checked every attribute issue 11 asks for and the pixels against
//! synthetic.png from the same generation, and saved what it read as pydicom.json.
//! This test writes the file again from the PNG's pixels, the same settings and the
//! UIDs and date pydicom read, and wants the same bytes: any change to the writer fails
//! here until the script has checked its new output.
//!
//! And against dicom3tools' IOD validator: `dciodvfy` reports no error on what the writer
//! makes (the CLI's, the batch's and the page's files all come from `encode_dicom`).

mod common;

use roentgen_web::dicom::{Created, Uids, encode_dicom};
use roentgen_web::image_io::ImageMetadata;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom")
        .join(name)
}

#[test]
fn the_writer_still_writes_the_file_pydicom_checked() {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("pydicom.json")).unwrap()).unwrap();
    assert!(
        report["checks"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == true),
        "{report}"
    );
    let attr = |k: &str| report["attributes"][k].as_str().unwrap().to_string();

    let decoder = png::Decoder::new(std::io::Cursor::new(
        std::fs::read(fixture("synthetic.png")).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut gray = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut gray).unwrap();
    gray.truncate(info.buffer_size());
    assert_eq!(info.color_type, png::ColorType::Grayscale);

    // the settings of the generation (tools/check_dicom.py's run: see pydicom.json)
    let meta = ImageMetadata {
        prompt: "Small right-sided pleural effusion. Ünïcode ok".into(),
        negative_prompt: String::new(),
        seed: 5,
        steps: 2,
        guidance: 4.0,
        scheduler: "pndm".into(),
        model: "tests/fixtures/tiny-sd".into(),
    };
    let uids = Uids {
        study: attr("StudyInstanceUID"),
        series: attr("SeriesInstanceUID"),
        instance: attr("SOPInstanceUID"),
    };
    let created = Created {
        date: attr("StudyDate"),
        time: attr("StudyTime"),
    };
    let ours = encode_dicom(
        &gray,
        info.width as usize,
        info.height as usize,
        &meta,
        &uids,
        &created,
    )
    .unwrap();
    let checked = std::fs::read(fixture("synthetic.dcm")).unwrap();
    assert_eq!(
        ours.len(),
        checked.len(),
        "the DICOM writer's output changed: rerun tools/check_dicom.py"
    );
    assert!(
        ours == checked,
        "the DICOM writer's output changed: rerun tools/check_dicom.py"
    );
    assert!(
        attr("ImageComments").contains("Ünïcode"),
        "UTF-8 (ISO_IR 192) read back"
    );
}

/// A file from the shared writer, with a long prompt in several scripts (cut to fit
/// Derivation Description's 1024 bytes), passes `dciodvfy` with no `Error` line; so does
/// the committed file.
#[test]
fn dciodvfy_finds_no_error() {
    let (w, h) = (96, 64);
    let gray: Vec<u8> = (0..w * h).map(|i| (i % w * 255 / (w - 1)) as u8).collect();
    let meta = ImageMetadata {
        prompt: "Left lower lobe consolidation, Ünïcode ok, 胸部 X 線. ".repeat(40),
        negative_prompt: "blurry \\ text".into(),
        seed: u64::MAX,
        steps: 75,
        guidance: 4.0,
        scheduler: "pndm".into(),
        model: "/models/roentgen".into(),
    };
    let bytes = encode_dicom(
        &gray,
        w,
        h,
        &meta,
        &Uids::from_entropy([u128::MAX, 1, 0x1234_5678_9abc_def0]),
        &Created::from_unix(1_796_228_545),
    )
    .unwrap();
    let path = std::env::temp_dir().join(format!("roentgen-dciodvfy-{}.dcm", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    common::assert_dciodvfy_accepts(&path);
    std::fs::remove_file(&path).unwrap();
    common::assert_dciodvfy_accepts(&fixture("synthetic.dcm"));
}
