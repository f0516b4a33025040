//! Quantized RoentGen end to end: `roentgen quantize` (the library's `convert_folder`)
//! turns the heavy-tailed fixture (`tests/fixtures/tiny-sd-heavy`: Student-t weights
//! with x6 outlier input channels, made by `tools/make_quant_fixture.py`) into int8 and
//! int4 folders, which generate natively and are compared with diffusers:
//! - against diffusers run with the same weights fake-quantized by the same scheme
//!   (`pipe.int8.*` goldens): the kernels dequantize exactly what the scheme says, so
//!   the f32 pipeline's bars hold (latents rel L2 ≤ 1e-3, image ≥ 40 dB);
//! - against diffusers' f32 image: the fidelity the format costs, the bars
//!   (int8 ≥ 45 dB, int4 ≥ 30 dB; the fixture measures 52.7 / 32.5 dB in diffusers).

mod common;

use common::{golden, gpu, psnr, rel_l2, request};
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::convert::{Target, convert_folder};
use roentgen_web::pipeline::{Control, Pipeline};
use roentgen_web::quant::QuantFormat;
use roentgen_web::schedulers::SchedulerKind;

/// Same engine, same dequantized weights as the reference: the f32 pipeline's bars.
const SAME_WEIGHTS_LATENTS_REL_L2: f64 = 1e-3;
const SAME_WEIGHTS_PSNR_DB: f64 = 40.0;
/// The fidelity bars against the f32 image.
const INT8_PSNR_DB: f64 = 45.0;
const INT4_PSNR_DB: f64 = 30.0;
/// UNet weight bytes against f32 (the bars).
const INT8_UNET_BYTES: f64 = 0.30;
const INT4_UNET_BYTES: f64 = 0.20;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd-heavy")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("roentgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quantized_folders_generate_within_their_tolerances() {
    for (q, bar, bytes_bar) in [
        (QuantFormat::Int8, INT8_PSNR_DB, INT8_UNET_BYTES),
        (QuantFormat::Int4, INT4_PSNR_DB, INT4_UNET_BYTES),
    ] {
        let name = q.name();
        let out = temp_dir(name);
        let reports = convert_folder(&fixture(), &out, Target::Quant(q), &mut |_| {}).unwrap();
        let unet = reports.iter().find(|r| r.component == "unet").unwrap();
        let ratio = unet.output_bytes as f64 / unet.input_bytes as f64;
        eprintln!(
            "{name}: UNet {} -> {} bytes ({ratio:.3}x)",
            unet.input_bytes, unet.output_bytes
        );
        assert!(
            ratio <= bytes_bar,
            "{name}: UNet weights {ratio:.3}x of f32 > {bytes_bar}"
        );
        let ck = Checkpoint::new(DirSource::new(&out).unwrap(), LoadOptions::default()).unwrap();
        let pipe = pollster::block_on(Pipeline::load(gpu(), &ck, &mut |_| {})).unwrap();
        for (kind, key) in [
            (SchedulerKind::Pndm, "pndm"),
            (SchedulerKind::DpmSolverMultistep, "dpmpp2m"),
        ] {
            pipe.ensure_unet(gpu()).unwrap();
            let images =
                common::generate(&pipe, gpu(), request(kind), &mut |_| Control::Continue).unwrap();
            let img = &images[0];
            let (e, i, g, w) = rel_l2(
                &img.latents,
                &golden("tiny-sd-heavy", &format!("pipe.{name}.{key}.latents")),
            );
            let same = psnr(
                &img.rgb,
                &golden("tiny-sd-heavy", &format!("pipe.{name}.{key}.image")),
            );
            let fidelity = psnr(
                &img.rgb,
                &golden("tiny-sd-heavy", &format!("pipe.{key}.image")),
            );
            eprintln!(
                "{name} {key}: vs fake-quantized diffusers latents rel L2 {e:.2e}, image {same:.1} dB; vs f32 diffusers {fidelity:.1} dB"
            );
            assert!(
                e <= SAME_WEIGHTS_LATENTS_REL_L2,
                "{name} {key}: latents rel L2 {e:.3e} against fake-quantized diffusers; worst element {i}: got {g}, want {w}"
            );
            assert!(
                same >= SAME_WEIGHTS_PSNR_DB,
                "{name} {key}: {same:.1} dB against fake-quantized diffusers"
            );
            assert!(
                fidelity >= bar,
                "{name} {key}: {fidelity:.1} dB against the f32 image < {bar} dB"
            );
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Rewrites a safetensors file's JSON header (the data bytes stay where they were
/// relative to the data start).
fn rewrite_header(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn load_error(dir: &std::path::Path) -> String {
    let ck = Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap();
    match pollster::block_on(ck.unet(gpu())) {
        Ok(_) => panic!("a broken quantized UNet loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_quantized_files_are_refused_with_a_sentence() {
    let out = temp_dir("broken");
    convert_folder(
        &fixture(),
        &out,
        Target::Quant(QuantFormat::Int8),
        &mut |_| {},
    )
    .unwrap();
    let unet = out.join("unet/diffusion_pytorch_model.safetensors");
    let pristine = std::fs::read(&unet).unwrap();
    let tensor = "down_blocks.0.resnets.0.conv1.weight";
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let meta = |key: &'static str, value: &'static str| -> Edit {
        Box::new(move |h| h["__metadata__"][key] = value.into())
    };
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "scales missing",
            Box::new(move |h| {
                h.as_object_mut()
                    .unwrap()
                    .remove(&format!("{tensor}.scales"));
            }),
            vec![tensor, "scales", "missing"],
        ),
        (
            "unknown version",
            meta("roentgen.quantization.version", "99"),
            vec!["version 99"],
        ),
        (
            "unknown block",
            meta("roentgen.quantization.block", "64"),
            vec!["blocks of 64"],
        ),
        (
            "wrong packed length",
            Box::new(move |h| {
                let e = &mut h[tensor];
                let [a, b] = [
                    e["data_offsets"][0].as_u64().unwrap(),
                    e["data_offsets"][1].as_u64().unwrap(),
                ];
                e["data_offsets"][1] = (b - 16).into();
                e["shape"][0] = (b - 16 - a).into();
            }),
            vec![tensor, "packed bytes"],
        ),
        (
            "unknown packed format",
            Box::new(move |h| {
                let key = "roentgen.quantization.tensors";
                let mut t: serde_json::Value =
                    serde_json::from_str(h["__metadata__"][key].as_str().unwrap()).unwrap();
                t[tensor]["format"] = "int3".into();
                h["__metadata__"][key] = t.to_string().into();
            }),
            vec![tensor, "int3"],
        ),
    ];
    for (what, edit, words) in cases {
        std::fs::write(&unet, &pristine).unwrap();
        rewrite_header(&unet, edit);
        let msg = load_error(&out);
        eprintln!("{what}: {msg}");
        assert!(
            msg.contains("diffusion_pytorch_model.safetensors"),
            "{what}: names no file: {msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{what}: `{w}` not in: {msg}");
        }
    }
    // a byte of -128 in the packed data (no value of the symmetric scheme)
    let mut bytes = pristine.clone();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + header_len + start + 5] = 0x80;
    std::fs::write(&unet, &bytes).unwrap();
    let msg = load_error(&out);
    assert!(
        msg.contains(tensor) && msg.contains("-128") && msg.contains("safetensors"),
        "{msg}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
