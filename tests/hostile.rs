//! The hostile-input suite (issue 13, docs/RELIABILITY.md "Hostile inputs"): every
//! broken or malicious input a stranger's folder, file or command line can hold, each
//! answered with a sentence that names the file, tensor, option or line, never a panic,
//! never an output. One table per kind of input; each case is (name, what it does,
//! the phrases the answer must hold). Prompt tables and batch arguments are in
//! tests/batch.rs, the pickle globals in src/weights/pickle.rs, config bounds in
//! src/models/config.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::models::{ClipTextConfig, UNetConfig, VaeConfig};
use roentgen_web::pipeline::Pipeline;
use roentgen_web::schedulers::{SchedulerConfig, SchedulerKind, build};
use roentgen_web::tokenizer::{PromptTokenizer, TokenizerFiles};
use roentgen_web::weights::WeightIndex;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Checks one answer: an error holding every phrase.
fn expect(case: &str, got: Result<(), String>, phrases: &[&str]) {
    let msg = match got {
        Ok(()) => panic!("{case}: accepted"),
        Err(m) => m,
    };
    eprintln!("{case}: {msg}");
    for p in phrases {
        assert!(msg.contains(p), "{case}: wanted {p:?} in: {msg}");
    }
}

// ---------------------------------------------------------------------------------
// checkpoint folders

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Replaces a checkpoint's `tokenizer/` by the WordPiece fixture's vocab.txt and config.
fn bert_tokenizer_dir(d: &Path) {
    let tok = d.join("tokenizer");
    std::fs::remove_dir_all(&tok).unwrap();
    std::fs::create_dir(&tok).unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(fixture("wordpiece").join(f), tok.join(f)).unwrap();
    }
}

fn load_folder(dir: &Path) -> Result<(), String> {
    let ck = Checkpoint::new(
        DirSource::new(dir).map_err(|e| e.to_string())?,
        LoadOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    pollster::block_on(Pipeline::load(common::gpu(), &ck, &mut |_| {}))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn broken_folders() {
    type Break = fn(&Path);
    let cases: [(&str, Break, &[&str]); 10] = [
        (
            "no unet/",
            |d| std::fs::remove_dir_all(d.join("unet")).unwrap(),
            &["unet/config.json", "copy the whole folder"],
        ),
        (
            "no tokenizer files",
            |d| std::fs::remove_dir_all(d.join("tokenizer")).unwrap(),
            &["tokenizer"],
        ),
        (
            "a BERT tokenizer/ (vocab.txt) lacking [SEP]",
            |d| {
                bert_tokenizer_dir(d);
                let vocab = std::fs::read_to_string(d.join("tokenizer/vocab.txt")).unwrap();
                let without: String = vocab
                    .lines()
                    .filter(|l| *l != "[SEP]")
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(d.join("tokenizer/vocab.txt"), without).unwrap();
            },
            &["tokenizer/vocab.txt", "sep_token", "[SEP]"],
        ),
        (
            // a CLIP text encoder with BERT's WordPiece tokenizer: said as a mix of two models
            "a BERT tokenizer/ (vocab.txt) beside a CLIP text encoder",
            bert_tokenizer_dir,
            &["tokenizer", "vocab.txt", "CLIP", "text_encoder/config.json"],
        ),
        (
            "no scheduler config",
            |d| std::fs::remove_file(d.join("scheduler/scheduler_config.json")).unwrap(),
            &["scheduler/scheduler_config.json", "copy the whole folder"],
        ),
        (
            "a file where vae/ should be",
            |d| {
                std::fs::remove_dir_all(d.join("vae")).unwrap();
                std::fs::write(d.join("vae"), "x").unwrap();
            },
            &["vae/config.json"],
        ),
        (
            "a folder where unet/config.json should be",
            |d| {
                std::fs::remove_file(d.join("unet/config.json")).unwrap();
                std::fs::create_dir(d.join("unet/config.json")).unwrap();
            },
            &["unet/config.json"],
        ),
        (
            "a weight file that is a dangling link",
            |d| {
                let w = d.join("text_encoder/model.safetensors");
                std::fs::remove_file(&w).unwrap();
                std::os::unix::fs::symlink("/nonexistent/blob", &w).unwrap();
            },
            &["text_encoder/model.safetensors", "could not"],
        ),
        (
            "an empty weight file",
            |d| std::fs::write(d.join("unet/diffusion_pytorch_model.safetensors"), b"").unwrap(),
            &["unet/diffusion_pytorch_model.safetensors"],
        ),
        (
            "the parent of a checkpoint, with no model_index.json",
            |d| {
                for e in std::fs::read_dir(d).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(p).unwrap();
                    } else {
                        std::fs::remove_file(p).unwrap();
                    }
                }
                std::fs::create_dir(d.join("some-other-folder")).unwrap();
            },
            &["model_index.json", "pick the diffusers folder"],
        ),
    ];
    let root = std::env::temp_dir().join(format!("roentgen-hostile-{}", std::process::id()));
    for (i, (name, break_it, phrases)) in cases.iter().enumerate() {
        let d = root.join(i.to_string());
        copy_dir(&fixture("tiny-sd"), &d);
        break_it(&d);
        expect(name, load_folder(&d), phrases);
    }
    expect(
        "not a folder",
        load_folder(&fixture("tiny-sd/model_index.json")),
        &["model_index.json", "no such directory"],
    );
    // model_index.json that is not JSON: nothing in it is needed, so the model loads
    // (with a warning naming the file)
    let d = root.join("index");
    copy_dir(&fixture("tiny-sd"), &d);
    std::fs::write(d.join("model_index.json"), "{not json").unwrap();
    load_folder(&d).expect("a broken model_index.json only warns");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---------------------------------------------------------------------------------
// model configs

#[test]
fn broken_configs() {
    let unet = std::fs::read_to_string(fixture("tiny-sd/unet/config.json")).unwrap();
    let vae = std::fs::read_to_string(fixture("tiny-sd/vae/config.json")).unwrap();
    let clip = std::fs::read_to_string(fixture("tiny-sd/text_encoder/config.json")).unwrap();
    let edit = |json: &str, key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        v[key] = value;
        v.to_string()
    };
    let u = |j: String| {
        UNetConfig::from_json("unet/config.json", &j)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let v = |j: String| {
        VaeConfig::from_json("vae/config.json", &j)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let c = |j: String| {
        ClipTextConfig::from_json("text_encoder/config.json", &j)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    use serde_json::json;
    expect(
        "UNet config not JSON",
        u("{\"in_channels\": 4,".into()),
        &["unet/config.json"],
    );
    expect(
        "UNet config a JSON array",
        u("[1, 2]".into()),
        &["unet/config.json", "not a JSON object"],
    );
    expect(
        "UNet widths of the wrong type",
        u(edit(&unet, "block_out_channels", json!("wide"))),
        &["unet/config.json", "line 1 column"],
    );
    expect(
        "UNet 10⁹ channels",
        u(edit(
            &unet,
            "block_out_channels",
            json!([1_000_000_000, 32, 32, 32]),
        )),
        &["unet/config.json", "block_out_channels"],
    );
    expect(
        "UNet no blocks",
        u(edit(&unet, "down_block_types", json!([]))),
        &["unet/config.json", "0 down"],
    );
    expect(
        "UNet negative heads",
        u(edit(&unet, "attention_head_dim", json!(-8))),
        &["unet/config.json", "attention_head_dim"],
    );
    expect(
        "VAE negative scaling factor",
        v(edit(&vae, "scaling_factor", json!(-0.18))),
        &["vae/config.json", "scaling_factor"],
    );
    expect(
        "VAE zero groups",
        v(edit(&vae, "norm_num_groups", json!(0))),
        &["vae/config.json", "norm_num_groups"],
    );
    // these used to be accepted, and panicked later (noted per case)
    expect(
        // attention.rs: "attention: 16 channels in 5 heads" at the first UNet call
        "UNet heads that do not divide a block's width",
        u(edit(&unet, "attention_head_dim", json!(5))),
        &[
            "unet/config.json",
            "attention_head_dim",
            "5 heads",
            "16 channels",
        ],
    );
    expect(
        "UNet per-block head counts, one not dividing its block",
        u(edit(&unet, "num_attention_heads", json!([4, 4, 3, 4]))),
        &[
            "unet/config.json",
            "num_attention_heads",
            "3 heads",
            "32 channels",
        ],
    );
    expect(
        // "attempt to multiply with overflow" (pipeline.rs, the default side)
        "UNet sample_size 10^19",
        u(edit(
            &unet,
            "sample_size",
            json!(10_000_000_000_000_000_000u64),
        )),
        &["unet/config.json", "sample_size"],
    );
    expect(
        "UNet fewer widths than block types",
        u(edit(&unet, "block_out_channels", json!([16, 16, 32]))),
        &["unet/config.json", "3 block_out_channels", "4 down"],
    );
    expect(
        // a 1-channel VAE's image is read as RGB after the decode
        "VAE of one output channel",
        v(edit(&vae, "out_channels", json!(1))),
        &["vae/config.json", "out_channels", "is 1", "3"],
    );
    expect(
        "VAE fewer block types than widths",
        v(edit(&vae, "up_block_types", json!(["UpDecoderBlock2D"]))),
        &["vae/config.json", "up_block_types", "4 block_out_channels"],
    );
    expect(
        "CLIP zero layers is absurd width",
        c(edit(&clip, "hidden_size", json!(0))),
        &["text_encoder/config.json", "hidden_size"],
    );
    expect(
        "CLIP 10⁹ positions",
        c(edit(
            &clip,
            "max_position_embeddings",
            json!(1_000_000_000u64),
        )),
        &["text_encoder/config.json", "max_position_embeddings"],
    );
}

// ---------------------------------------------------------------------------------
// safetensors

fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend(header.as_bytes());
    v.resize(v.len() + data, 0);
    v
}

#[test]
fn broken_safetensors() {
    let p = |b: Vec<u8>| {
        WeightIndex::parse("w.safetensors", &b)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend(b"{}");
    expect("header length 2^64-1", p(huge), &["w.safetensors"]);
    let mut beyond = 1000u64.to_le_bytes().to_vec();
    beyond.extend(b"{\"a\":1}");
    expect(
        "header length beyond the file",
        p(beyond),
        &["w.safetensors"],
    );
    expect(
        "header not JSON",
        p(safetensors("{\"a\": {\"dtype\": ", 0)),
        &["w.safetensors"],
    );
    expect(
        "header a JSON list",
        p(safetensors("[1,2,3]", 0)),
        &["w.safetensors"],
    );
    expect(
        "offsets beyond the data",
        p(safetensors(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        )),
        &["w.safetensors", "a"],
    );
    expect(
        "offsets reversed",
        p(safetensors(
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
            8,
        )),
        &["w.safetensors", "a"],
    );
    expect(
        "unknown dtype",
        p(safetensors(
            r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
            16,
        )),
        &["w.safetensors", "F128"],
    );
    expect(
        "shape disagreeing with its bytes",
        p(safetensors(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        )),
        &["w.safetensors", "a"],
    );
    expect(
        "a shape whose element count overflows",
        p(safetensors(
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
            8,
        )),
        &["w.safetensors", "a"],
    );
    expect("an empty file", p(Vec::new()), &["w.safetensors"]);
    expect(
        "seven bytes",
        p(vec![1, 0, 0, 0, 0, 0, 0]),
        &["w.safetensors"],
    );
}

// ---------------------------------------------------------------------------------
// torch .bin (zip + pickle)

/// A STORED zip of `entries` (name, bytes), as torch writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = z.len() as u32;
        let head = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes());
            if central {
                h.extend([0u8; 10]); // comment length, disk, attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        z.extend(head(0x0403_4b50, false));
        z.extend_from_slice(data);
        central.extend(head(0x0201_4b50, true));
    }
    let cd_offset = z.len() as u32;
    z.extend(&central);
    z.extend(0x0605_4b50u32.to_le_bytes());
    z.extend([0, 0, 0, 0]);
    z.extend((entries.len() as u16).to_le_bytes());
    z.extend((entries.len() as u16).to_le_bytes());
    z.extend((central.len() as u32).to_le_bytes());
    z.extend(cd_offset.to_le_bytes());
    z.extend(0u16.to_le_bytes());
    z
}

#[test]
fn broken_and_malicious_torch_files() {
    let p = |b: Vec<u8>| {
        WeightIndex::parse("unet/diffusion_pytorch_model.bin", &b)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let real = std::fs::read(fixture("tiny-sd-bin/unet/diffusion_pytorch_model.bin")).unwrap();
    expect(
        "not a zip",
        p(b"PK this is not really a zip archive at all".to_vec()),
        &["diffusion_pytorch_model.bin"],
    );
    expect(
        "truncated zip",
        p(real[..real.len() / 2].to_vec()),
        &["diffusion_pytorch_model.bin"],
    );
    // an entry whose sizes claim 4 GiB - 1 in a tiny file
    let mut z = zip(&[("archive/data.pkl", b"\x80\x02}q\x00.")]);
    let cd = z
        .windows(4)
        .rposition(|w| w == 0x0201_4b50u32.to_le_bytes())
        .unwrap();
    z[cd + 20..cd + 28].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]);
    expect(
        "an entry declaring 4 GiB",
        p(z),
        &["diffusion_pytorch_model.bin"],
    );
    // pickles that would run code: refused by name, never executed
    let evil: [(&str, &[u8]); 4] = [
        (
            "os system",
            b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.",
        ),
        (
            "posix system",
            b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.",
        ),
        (
            "builtins eval",
            b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x031+1\x94\x85R.",
        ),
        (
            "__builtin__ getattr",
            b"\x80\x02c__builtin__\ngetattr\nX\x01\x00\x00\x00xX\x01\x00\x00\x00y\x86R.",
        ),
    ];
    for (name, pkl) in evil {
        let z = zip(&[("archive/data.pkl", pkl), ("archive/version", b"3\n")]);
        let (module, global) = name.split_once(' ').unwrap();
        expect(
            &format!("pickle calling {name}"),
            p(z),
            &["diffusion_pytorch_model.bin", module, global],
        );
    }
    expect(
        "an entry named ../../etc/passwd",
        p(zip(&[
            ("archive/../../etc/passwd", b"x"),
            ("archive/data.pkl", b"\x80\x02}."),
        ])),
        &["outside the archive"],
    );
}

// ---------------------------------------------------------------------------------
// tokenizer files

#[test]
fn broken_tokenizer_files() {
    let vocab = std::fs::read(fixture("tiny-sd/tokenizer/vocab.json")).unwrap();
    let merges = std::fs::read(fixture("tiny-sd/tokenizer/merges.txt")).unwrap();
    let t = |vocab: Option<&[u8]>, merges: Option<&[u8]>| {
        PromptTokenizer::from_files(TokenizerFiles {
            vocab_json: vocab,
            merges_txt: merges,
            vocab_txt: None,
            tokenizer_json: None,
            tokenizer_config_json: None,
            special_tokens_map_json: None,
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    expect("no tokenizer files", t(None, None), &["tokenizer/"]);
    expect(
        "vocab.json without merges.txt",
        t(Some(&vocab), None),
        &["merges.txt"],
    );
    expect(
        "vocab.json not JSON",
        t(Some(b"{\"a\": "), Some(&merges)),
        &["vocab.json"],
    );
    expect(
        "merges.txt that is not merges",
        t(Some(&vocab), Some(b"#version: 0.2\na b c d\n")),
        &["merges.txt"],
    );
    let tokenizer_json = t_json(b"{\"model\": 3}");
    expect(
        "tokenizer.json of the wrong shape",
        tokenizer_json,
        &["tokenizer.json"],
    );
}

#[test]
fn broken_wordpiece_files() {
    let vocab = std::fs::read_to_string(fixture("wordpiece/vocab.txt")).unwrap();
    let without = |token: &str| -> Vec<u8> {
        vocab
            .lines()
            .filter(|l| *l != token)
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let t = |vocab_txt: &[u8], config: Option<&[u8]>| {
        PromptTokenizer::from_files(TokenizerFiles {
            vocab_txt: Some(vocab_txt),
            tokenizer_config_json: config,
            ..TokenizerFiles::default()
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    expect(
        "vocab.txt without [CLS]",
        t(&without("[CLS]"), None),
        &[
            "tokenizer/vocab.txt",
            "cls_token",
            "\"[CLS]\"",
            "not in the vocabulary",
        ],
    );
    expect(
        "vocab.txt without [UNK]",
        t(&without("[UNK]"), None),
        &["tokenizer/vocab.txt", "unk_token", "[UNK]"],
    );
    expect(
        "an empty vocab.txt",
        t(b"", None),
        &["tokenizer/vocab.txt", "(0 tokens)", "[UNK]"],
    );
    expect(
        "vocab.txt not UTF-8",
        t(b"[PAD]\n[UNK]\n\xff\xfe\n", None),
        &["tokenizer/vocab.txt", "UTF-8"],
    );
    expect(
        "a tokenizer_config.json naming a cls_token the vocabulary lacks",
        t(vocab.as_bytes(), Some(br#"{"cls_token": "<s>"}"#)),
        &["tokenizer/vocab.txt", "cls_token", "<s>"],
    );
    expect(
        "do_lower_case that is not a boolean",
        t(vocab.as_bytes(), Some(br#"{"do_lower_case": "yes"}"#)),
        &[
            "tokenizer/tokenizer_config.json",
            "do_lower_case",
            "\"yes\"",
        ],
    );
    expect(
        "a model_max_length of 2",
        t(vocab.as_bytes(), Some(br#"{"model_max_length": 2}"#)),
        &["tokenizer/tokenizer_config.json", "model_max_length 2"],
    );
    expect(
        "a tokenizer.json of another model (Unigram)",
        t_json(br#"{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}"#),
        &["tokenizer.json", "Unigram", "BPE", "WordPiece"],
    );
    expect(
        "a WordPiece tokenizer.json without a vocabulary",
        t_json(br#"{"model": {"type": "WordPiece"}}"#),
        &["tokenizer/tokenizer.json", "WordPiece", "vocab"],
    );
    expect(
        "a WordPiece tokenizer.json whose vocabulary lacks [SEP]",
        t_json(br#"{"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[MASK]": 3}}}"#),
        &["tokenizer/tokenizer.json", "sep_token", "[SEP]"],
    );
}

fn t_json(bytes: &[u8]) -> Result<(), String> {
    PromptTokenizer::from_files(TokenizerFiles {
        vocab_json: None,
        merges_txt: None,
        vocab_txt: None,
        tokenizer_json: Some(bytes),
        tokenizer_config_json: None,
        special_tokens_map_json: None,
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------
// scheduler configs

#[test]
fn broken_scheduler_configs() {
    let good = std::fs::read_to_string(fixture("tiny-sd/scheduler/scheduler_config.json")).unwrap();
    let edit = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v[key] = value;
        v.to_string()
    };
    let file = "scheduler/scheduler_config.json";
    let s = |json: String| {
        SchedulerConfig::from_json(file, &json)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    use serde_json::json;
    expect("not JSON", s("{".into()), &[file]);
    expect(
        "a JSON array",
        s("[1000, 0.00085]".into()),
        &[file, "not a JSON object"],
    );
    expect(
        "an unknown beta schedule",
        s(edit("beta_schedule", json!("cosine-ish"))),
        &[file, "cosine-ish"],
    );
    expect(
        "zero training timesteps",
        s(edit("num_train_timesteps", json!(0))),
        &[file, "num_train_timesteps"],
    );
    expect(
        "an unknown prediction type",
        s(edit("prediction_type", json!("x0"))),
        &[file, "x0"],
    );
    expect(
        "beta_end below beta_start",
        s(edit("beta_end", json!(-1.0))),
        &[file],
    );
    let cfg = SchedulerConfig::from_json(file, &good).unwrap();
    expect(
        "more steps than training timesteps",
        build(SchedulerKind::Pndm, &cfg, 5000)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        &["5000"],
    );
    expect(
        "zero steps",
        build(SchedulerKind::Ddim, &cfg, 0)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        &["step"],
    );
}

// ---------------------------------------------------------------------------------
// command-line arguments (the real binary)

#[test]
fn bad_arguments_are_refused_before_any_output() {
    let dir = std::env::temp_dir().join(format!("roentgen-hostile-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x.png");
    let model = fixture("tiny-sd");
    let cases: [(&[&str], &[&str]); 11] = [
        (&["--steps", "0"], &["steps"]),
        (&["--steps", "100000"], &["steps must be at most 1000"]),
        (&["--steps", "-3"], &["'-3'", "--steps"]),
        (&["--guidance", "NaN"], &["guidance must be a number"]),
        (&["--guidance", "inf"], &["guidance must be a number"]),
        (&["--guidance", "-1"], &["guidance must be a number"]),
        (&["--width", "100"], &["multiples of"]),
        (&["--height", "100000"], &["at most 2048"]),
        (&["--count", "0"], &["count must be at least 1"]),
        (&["--count", "100000"], &["count at most 64"]),
        (&["--scheduler", "magic"], &["--scheduler", "magic"]),
    ];
    for (extra, phrases) in cases {
        let mut c = Command::new(env!("CARGO_BIN_EXE_roentgen"));
        c.args(["generate", "--model"])
            .arg(&model)
            .args(["--prompt", "Cardiomegaly.", "--output"])
            .arg(&out);
        for (k, v) in [("--width", "64"), ("--height", "64"), ("--steps", "2")] {
            if !extra.contains(&k) {
                c.args([k, v]);
            }
        }
        c.args(extra);
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let name = extra.join(" ");
        expect(
            &name,
            if o.status.success() {
                Ok(())
            } else {
                Err(err.clone())
            },
            phrases,
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!out.exists(), "{name}: an output was written");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------
// a folder whose parts disagree, and sizes this GPU cannot hold: through the CLI

/// Sets `key` of the JSON file `rel` in folder `d`.
fn set(d: &Path, rel: &str, key: &str, value: serde_json::Value) {
    let p = d.join(rel);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn disagreeing_folders_and_oversized_requests_through_the_cli() {
    use serde_json::json;
    let dir = std::env::temp_dir().join(format!("roentgen-hostile-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x.png");
    // a 2048x2048 gray init image (the VAE encoder's first map, 16 channels at full
    // size, is 256 MiB: more than a browser's 128 MiB binding)
    let big = dir.join("big.png");
    std::fs::write(
        &big,
        roentgen_web::image_io::encode_png(
            &vec![128u8; 2048 * 2048],
            2048,
            2048,
            1,
            &Default::default(),
        )
        .unwrap(),
    )
    .unwrap();
    let big = big.to_str().unwrap().to_string();
    type Break = fn(&Path);
    let none: Break = |_| {};
    // (name and the panic it used to give, the break, extra arguments, browser limits,
    // phrases)
    type Case<'a> = (&'a str, Break, Vec<&'a str>, bool, &'a [&'a str]);
    let cases: [Case; 7] = [
        (
            // attention.rs:300 "attention: 16 channels in 5 heads"
            "UNet heads that do not divide the width",
            |d| set(d, "unet/config.json", "attention_head_dim", json!(5)),
            vec![],
            false,
            &["unet/config.json", "attention_head_dim", "5 heads"],
        ),
        (
            "UNet widths fewer than its block types",
            |d| {
                set(
                    d,
                    "unet/config.json",
                    "block_out_channels",
                    json!([16, 16, 32]),
                )
            },
            vec![],
            false,
            &["unet/config.json", "3 block_out_channels"],
        ),
        (
            "a text encoder whose weights are narrower than its config",
            |d| {
                set(d, "text_encoder/config.json", "hidden_size", json!(36));
                set(d, "unet/config.json", "cross_attention_dim", json!(36));
            },
            vec![],
            false,
            &["text_encoder/model.safetensors", "36", "32"],
        ),
        (
            "a VAE and UNet of 8 latent channels with 4-channel weights",
            |d| {
                set(d, "vae/config.json", "latent_channels", json!(8));
                set(d, "unet/config.json", "in_channels", json!(8));
                set(d, "unet/config.json", "out_channels", json!(8));
            },
            vec![],
            false,
            &["conv_in", "[16, 8, 3, 3]"],
        ),
        (
            // an error at the first generation, naming neither file: "shape mismatch:
            // text encoder input must be 2 rows of the same length 1..=77 tokens"
            "a tokenizer padding to more tokens than the text encoder has positions",
            |d| {
                set(
                    d,
                    "tokenizer/tokenizer_config.json",
                    "model_max_length",
                    json!(100),
                )
            },
            vec![],
            false,
            &[
                "tokenizer/tokenizer_config.json",
                "text_encoder/config.json",
                "100",
                "77",
            ],
        ),
        (
            // gemm.rs "conv2d output does not fit one binding; use conv2d_sliced"
            "2048x2048, 17 at once, in a browser's limits",
            none,
            vec!["--width", "2048", "--height", "2048", "--count", "17"],
            true,
            &["MiB", "maxStorageBufferBindingSize", "fewer images"],
        ),
        (
            // blocks.rs "resnet output does not fit one binding; use forward_sliced"
            "a 2048x2048 init image in a browser's limits",
            none,
            vec!["--init-image", &big, "--width", "2048", "--height", "2048"],
            true,
            &["MiB", "maxStorageBufferBindingSize", "VAE"],
        ),
    ];
    for (i, (name, break_it, extra, browser, phrases)) in cases.into_iter().enumerate() {
        let model = dir.join(format!("m{i}"));
        copy_dir(&fixture("tiny-sd"), &model);
        break_it(&model);
        let mut c = Command::new(env!("CARGO_BIN_EXE_roentgen"));
        c.args(["generate", "--model"])
            .arg(&model)
            .args(["--prompt", "Cardiomegaly.", "--steps", "2", "--output"])
            .arg(&out);
        for (k, v) in [("--width", "64"), ("--height", "64")] {
            if !extra.contains(&k) {
                c.args([k, v]);
            }
        }
        c.args(&extra);
        if browser {
            c.env("ROENTGEN_WEBGPU_LIMITS", "1");
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        expect(
            name,
            if o.status.success() {
                Ok(())
            } else {
                Err(err.clone())
            },
            phrases,
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!out.exists(), "{name}: an output was written");
    }
    // the same size through `roentgen batch`, 17 images a chunk: refused before any image
    let table = dir.join("p.csv");
    std::fs::write(&table, "prompt\nEdema.\n").unwrap();
    let images = dir.join("batch");
    let o = Command::new(env!("CARGO_BIN_EXE_roentgen"))
        .args(["batch", "--model"])
        .arg(fixture("tiny-sd"))
        .arg("--prompts")
        .arg(&table)
        .arg("--output-dir")
        .arg(&images)
        .args(["--images-per-prompt", "17", "--batch-size", "17"])
        .args(["--width", "2048", "--height", "2048", "--steps", "2"])
        .env("ROENTGEN_WEBGPU_LIMITS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    expect(
        "batch: 2048x2048, 17 a chunk, in a browser's limits",
        if o.status.success() {
            Ok(())
        } else {
            Err(err.clone())
        },
        &["17 images at once", "maxStorageBufferBindingSize"],
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !images.join("images").exists()
            || std::fs::read_dir(images.join("images"))
                .unwrap()
                .next()
                .is_none(),
        "batch: an image was written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------
// the fit check is an upper bound: what it accepts runs without a panic

/// The tiny model on a device that claims `binding`-byte storage bindings: each request
/// either runs (no map needed a second slice where the UNet or the VAE encoder cannot
/// take one: those used to panic) or is refused by `models::fit` with its sentence.
#[test]
fn what_the_fit_check_accepts_runs_at_every_binding() {
    let mut gpu = pollster::block_on(roentgen_web::gpu::Gpu::new()).unwrap();
    let ck = Checkpoint::new(
        DirSource::new(fixture("tiny-sd")).unwrap(),
        LoadOptions::default(),
    )
    .unwrap();
    let pipe = pollster::block_on(Pipeline::load(&gpu, &ck, &mut |_| {})).unwrap();
    let request = |side: (usize, usize), edit: bool| {
        let req = roentgen_web::pipeline::GenerateRequest {
            steps: 2,
            width: side.0,
            height: side.1,
            ..common::request(SchedulerKind::Pndm)
        };
        if edit {
            let rgb = vec![0.5; side.0 * side.1 * 3];
            common::edit_request(req, &rgb, None, 1.0, true)
        } else {
            req.into()
        }
    };
    // the tiny model at 64x64: the UNet's largest map is 256 KiB (2 rows x 8x8 x 512:
    // its 8 heads' chunked scores), the VAE encoder's 256 KiB (64x64 x 16)
    let mut ran = Vec::new();
    for binding in [96 << 10, (256 << 10) - 4, 256 << 10, 300 << 10, 1 << 20] {
        gpu.info.max_storage_binding = binding;
        for (side, edit) in [((64, 64), false), ((64, 64), true), ((72, 88), true)] {
            let name = format!("{binding} bytes, {}x{}, edit {edit}", side.0, side.1);
            match common::generate(&pipe, &gpu, request(side, edit), &mut |_| {
                roentgen_web::pipeline::Control::Continue
            }) {
                Ok(images) => {
                    assert_eq!(images.len(), 1, "{name}");
                    ran.push(name);
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("maxStorageBufferBindingSize"), "{name}: {e}");
                }
            }
        }
    }
    eprintln!("ran: {ran:?}");
    assert!(
        ran.iter()
            .any(|r| r.starts_with("262144 bytes, 64x64, edit false"))
    );
    assert!(!ran.iter().any(|r| r.starts_with("98304 ")), "{ran:?}");
}
