//! Each model of each committed fixture pipeline against the golden tensors diffusers
//! produced for it (`tools/make_fixtures.py`), intermediates included so a failure
//! points at the block that drifted.
//!
//! Tolerance: relative L2 error ≤ 1e-4 in f32 (the bar). Our kernels accumulate
//! in a different order than PyTorch's, which costs ~1e-6 per layer; 1e-4 leaves room
//! for tens of layers but not for a wrong formula (those give 1e-2 and up). The fp16
//! fixtures' goldens were computed in f32 from the fp16-rounded weights, which our
//! engine keeps as f16 on the GPU and widens exactly, so the same bound holds.

mod common;

use common::{assert_close, gpus, read_on};
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::gpu::{Gpu, Tensor};
use roentgen_web::loader::{Loader, MatrixFormat, WeightFile};
use roentgen_web::models::clip::ClipTrace;
use roentgen_web::models::unet::UNetTrace;
use roentgen_web::models::vae::DecoderTrace;
use roentgen_web::models::{TextConfig, TextEncoder};
use roentgen_web::weights::{DType, WeightIndex};

const F32_REL_L2: f64 = 1e-4;
const FIXTURES: [&str; 3] = ["tiny-sd", "tiny-sd-bin", "tiny-sd-alt"];

struct Golden {
    index: WeightIndex,
    bytes: Vec<u8>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let path = format!(
            "{}/tests/fixtures/golden/{name}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Golden {
            index: WeightIndex::parse(&path, &bytes).unwrap(),
            bytes,
        }
    }
    fn shape(&self, name: &str) -> Vec<usize> {
        self.index.get(name).unwrap().shape.clone()
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        self.index
            .read_f32(&self.bytes, name, &self.shape(name))
            .unwrap()
    }
    fn i64(&self, name: &str) -> Vec<i64> {
        let (info, data) = self.index.tensor_bytes(&self.bytes, name).unwrap();
        assert_eq!(info.dtype, DType::I64);
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    /// A golden NCHW map as NHWC, and its NHWC shape.
    fn nhwc(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let s = self.shape(name);
        let [b, c, h, w] = s[..].try_into().unwrap();
        (nchw_to_nhwc(&self.f32(name), b, c, h, w), vec![b, h, w, c])
    }
}

fn nchw_to_nhwc(x: &[f32], b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((bi * h + y) * w + xx) * c + ci] = x[((bi * c + ci) * h + y) * w + xx];
                }
            }
        }
    }
    out
}

fn checkpoint(name: &str) -> Checkpoint<DirSource> {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap()
}

fn check_map(gpu: &Gpu, g: &Golden, what: &str, golden: &str, t: &Tensor) {
    let (want, shape) = g.nhwc(golden);
    assert_eq!(t.shape(), &shape[..], "{what}: shape");
    assert_close(what, &read_on(gpu, t), &want, F32_REL_L2);
}

#[test]
fn text_encoder_matches_diffusers() {
    for ((path, gpu), name) in gpus().into_iter().flat_map(|p| FIXTURES.map(|f| (p, f))) {
        let name = &format!("{path} {name}");
        let fixture = name.split(' ').next_back().unwrap();
        let g = Golden::load(fixture);
        let ck = checkpoint(fixture);
        let TextEncoder::Clip(model) = pollster::block_on(ck.text_encoder(gpu)).unwrap() else {
            panic!("{name}: a CLIP text encoder was expected");
        };
        let ids: Vec<Vec<u32>> = g
            .i64("text.input_ids")
            .chunks(77)
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect();
        let mut trace = ClipTrace::default();
        let out = model.forward_traced(gpu, &ids, Some(&mut trace)).unwrap();
        assert_close(
            &format!("{name} text.embeddings"),
            &read_on(gpu, trace.embeddings.as_ref().unwrap()),
            &g.f32("text.embeddings"),
            F32_REL_L2,
        );
        assert_close(
            &format!("{name} text.layer0"),
            &read_on(gpu, &trace.layers[0]),
            &g.f32("text.layer0"),
            F32_REL_L2,
        );
        assert_close(
            &format!("{name} text.last_hidden_state"),
            &read_on(gpu, &out),
            &g.f32("text.last_hidden_state"),
            F32_REL_L2,
        );
    }
}

/// RadEdit's text encoder against transformers' `BertModel` (tools/make_radedit_fixtures.py),
/// from both layouts: CXR-BERT's `pytorch_model.bin` (`bert.*` keys plus the `cls.*` and
/// `cls_projection_head.*` heads) in the pipeline folder, and diffusers' own save of it
/// (a plain `BertModel`, `model.safetensors`, no prefix).
#[test]
fn bert_text_encoder_matches_transformers() {
    let g = Golden::load("tiny-radedit");
    let ids: Vec<Vec<u32>> = g
        .i64("text.input_ids")
        .chunks(128)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    for (path, gpu) in gpus() {
        let from_folder = pollster::block_on(checkpoint("tiny-radedit").text_encoder(gpu)).unwrap();
        let TextEncoder::Bert(folder) = from_folder else {
            panic!("tiny-radedit: its CXRBertModel config was not taken for a BERT");
        };
        let dir = format!("{root}/tests/fixtures/bert-plain");
        let config = TextConfig::from_json(
            "bert-plain/config.json",
            &std::fs::read_to_string(format!("{dir}/config.json")).unwrap(),
        )
        .unwrap();
        let file = WeightFile::parse(
            "bert-plain/model.safetensors",
            std::fs::read(format!("{dir}/model.safetensors")).unwrap(),
        )
        .unwrap();
        let TextEncoder::Bert(plain) = TextEncoder::load(
            &Loader::new(gpu, &file, MatrixFormat::AsStored).component("text_encoder"),
            config,
        )
        .unwrap() else {
            panic!("bert-plain: its BertModel config was not taken for a BERT");
        };
        for (layout, model) in [
            ("pytorch_model.bin", &folder),
            ("model.safetensors", &plain),
        ] {
            let name = format!("{path} {layout}");
            let mut trace = Vec::new();
            let out = model.forward_traced(gpu, &ids, Some(&mut trace)).unwrap();
            for (what, t) in [
                ("text.embeddings", &trace[0]),
                ("text.layer0", &trace[1]),
                ("text.last_hidden_state", &out),
            ] {
                assert_close(
                    &format!("{name} {what}"),
                    &read_on(gpu, t),
                    &g.f32(what),
                    F32_REL_L2,
                );
            }
        }
    }
}

#[test]
fn unet_matches_diffusers() {
    for ((path, gpu), name) in gpus().into_iter().flat_map(|p| FIXTURES.map(|f| (p, f))) {
        let name = &format!("{path} {name}");
        let fixture = name.split(' ').next_back().unwrap();
        let g = Golden::load(fixture);
        let ck = checkpoint(fixture);
        let unet = pollster::block_on(ck.unet(gpu)).unwrap();
        let (sample, shape) = g.nhwc("unet.sample");
        let sample = gpu.upload(&sample, &shape).unwrap();
        let ctx = gpu
            .upload(
                &g.f32("unet.encoder_hidden_states"),
                &g.shape("unet.encoder_hidden_states"),
            )
            .unwrap();
        let t = g.i64("unet.timestep")[0] as f32;
        let mut tr = UNetTrace::default();
        let out = unet
            .forward_traced(gpu, &sample, t, &ctx, Some(&mut tr))
            .unwrap();
        assert_close(
            &format!("{name} unet.time_emb"),
            &read_on(gpu, tr.time_emb.as_ref().unwrap()),
            &g.f32("unet.time_emb"),
            F32_REL_L2,
        );
        check_map(
            gpu,
            &g,
            &format!("{name} unet.conv_in"),
            "unet.conv_in",
            tr.conv_in.as_ref().unwrap(),
        );
        for (i, t) in tr.down.iter().enumerate() {
            check_map(
                gpu,
                &g,
                &format!("{name} unet.down.{i}"),
                &format!("unet.down.{i}"),
                t,
            );
        }
        check_map(
            gpu,
            &g,
            &format!("{name} unet.mid"),
            "unet.mid",
            tr.mid.as_ref().unwrap(),
        );
        for (i, t) in tr.up.iter().enumerate() {
            check_map(
                gpu,
                &g,
                &format!("{name} unet.up.{i}"),
                &format!("unet.up.{i}"),
                t,
            );
        }
        check_map(
            gpu,
            &g,
            &format!("{name} unet.conv_norm_out"),
            "unet.conv_norm_out",
            tr.conv_norm_out.as_ref().unwrap(),
        );
        check_map(gpu, &g, &format!("{name} unet.out"), "unet.out", &out);
    }
}

#[test]
fn vae_decoder_matches_diffusers() {
    for ((path, gpu), name) in gpus().into_iter().flat_map(|p| FIXTURES.map(|f| (p, f))) {
        let name = &format!("{path} {name}");
        let fixture = name.split(' ').next_back().unwrap();
        let g = Golden::load(fixture);
        let ck = checkpoint(fixture);
        let vae = pollster::block_on(ck.vae(gpu, false)).unwrap();
        let (z, shape) = g.nhwc("vae.decode_in");
        let z = gpu.upload(&z, &shape).unwrap();
        let mut tr = DecoderTrace::default();
        let out = vae.decode_traced(gpu, &z, Some(&mut tr));
        check_map(
            gpu,
            &g,
            &format!("{name} vae.post_quant_conv"),
            "vae.post_quant_conv",
            tr.post_quant_conv.as_ref().unwrap(),
        );
        check_map(
            gpu,
            &g,
            &format!("{name} vae.decoder.mid"),
            "vae.decoder.mid",
            tr.mid.as_ref().unwrap(),
        );
        for (i, t) in tr.up.iter().enumerate() {
            check_map(
                gpu,
                &g,
                &format!("{name} vae.decoder.up.{i}"),
                &format!("vae.decoder.up.{i}"),
                t,
            );
        }
        check_map(
            gpu,
            &g,
            &format!("{name} vae.decode_out"),
            "vae.decode_out",
            &out,
        );
    }
}

#[test]
fn vae_encoder_matches_diffusers() {
    for ((path, gpu), name) in gpus().into_iter().flat_map(|p| FIXTURES.map(|f| (p, f))) {
        let name = &format!("{path} {name}");
        let fixture = name.split(' ').next_back().unwrap();
        let g = Golden::load(fixture);
        let ck = checkpoint(fixture);
        let vae = pollster::block_on(ck.vae(gpu, true)).unwrap();
        let (x, shape) = g.nhwc("vae.encode_in");
        let x = gpu.upload(&x, &shape).unwrap();
        let moments = vae.encode(gpu, &x).unwrap();
        check_map(
            gpu,
            &g,
            &format!("{name} vae.encode_moments"),
            "vae.encode_moments",
            &moments,
        );
    }
}

/// A copy of a fixture in a fresh temporary folder, to break on purpose.
fn scratch_copy(name: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dst = std::env::temp_dir().join(format!(
        "roentgen-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dst);
    fn copy(a: &std::path::Path, b: &std::path::Path) {
        std::fs::create_dir_all(b).unwrap();
        for e in std::fs::read_dir(a).unwrap().flatten() {
            if e.path().is_dir() {
                copy(&e.path(), &b.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
            }
        }
    }
    copy(&src, &dst);
    dst
}

fn load_unet_error(dir: &std::path::Path) -> String {
    let ck = Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap();
    let e = match pollster::block_on(ck.unet(common::gpu())) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    };
    eprintln!("error: {e}");
    let _ = std::fs::remove_dir_all(dir);
    e
}

/// Bad checkpoints fail with a sentence that names the file and, where there is one,
/// the tensor, and says what to do; never a panic.
#[test]
fn broken_checkpoints_give_actionable_errors() {
    // truncated weight file
    let dir = scratch_copy("tiny-sd");
    let f = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_unet_error(&dir);
    assert!(
        e.contains("unet/diffusion_pytorch_model.safetensors")
            && e.contains("truncated")
            && e.contains("re-download"),
        "{e}"
    );

    // a config that does not match the weights: the tensor and both shapes are named
    let dir = scratch_copy("tiny-sd");
    let cfg = dir.join("unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    json["block_out_channels"] = serde_json::json!([16, 16, 32, 48]);
    std::fs::write(&cfg, json.to_string()).unwrap();
    let e = load_unet_error(&dir);
    assert!(
        e.contains("has shape") && e.contains("expects") && e.contains("`"),
        "{e}"
    );

    // no weight file at all: what was looked for and what the folder holds
    let dir = scratch_copy("tiny-sd");
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let e = load_unet_error(&dir);
    assert!(e.contains("unet") && e.contains("safetensors"), "{e}");

    // a config that is not JSON names its file
    let dir = scratch_copy("tiny-sd");
    std::fs::write(dir.join("unet/config.json"), "{ not json").unwrap();
    let e = load_unet_error(&dir);
    assert!(e.contains("unet/config.json"), "{e}");

    // a tensor missing from the file: named, with the file
    let dir = scratch_copy("tiny-sd-bin");
    let cfg = dir.join("unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    json["layers_per_block"] = serde_json::json!(3);
    std::fs::write(&cfg, json.to_string()).unwrap();
    let e = load_unet_error(&dir);
    assert!(
        e.contains("unet/diffusion_pytorch_model.bin")
            && e.contains("has no tensor")
            && e.contains("resnets.2"),
        "{e}"
    );
}

/// A latent size that is not a multiple of 8 (9x13): the up path must grow each level
/// to its skip connection's size (17 -> ... not a doubling), as diffusers does with
/// `upsample_size` and PyTorch's nearest interpolation.
#[test]
fn unet_matches_diffusers_at_odd_latent_sizes() {
    for (path, gpu) in gpus() {
        let g = Golden::load("tiny-sd-odd");
        let unet = pollster::block_on(checkpoint("tiny-sd").unet(gpu)).unwrap();
        let (sample, shape) = g.nhwc("unet.sample");
        let sample = gpu.upload(&sample, &shape).unwrap();
        let ctx = gpu
            .upload(
                &g.f32("unet.encoder_hidden_states"),
                &g.shape("unet.encoder_hidden_states"),
            )
            .unwrap();
        let out = unet
            .forward(gpu, &sample, g.i64("unet.timestep")[0] as f32, &ctx)
            .unwrap();
        check_map(
            gpu,
            &g,
            &format!("{path} tiny-sd 9x13 unet.out"),
            "unet.out",
            &out,
        );
    }
}
