//! The front door (src/generation.rs): one request, checked once, the same sentence
//! from the CLI's `generate`, its `batch` and the page's protocol; the model family's
//! recipe where the user gives no setting; mismatched parts refused before any output.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::generation::{EditRequest, Inversion, Request};
use roentgen_web::pipeline::Pipeline;
use roentgen_web::web::protocol::{EditBytes, EditSettings, RadEditSettings, Settings};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("roentgen-front-door-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the CLI: (exit code, stderr).
fn roentgen(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roentgen"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the roentgen binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The library's sentence for a request with `f` applied.
fn sentence(f: &dyn Fn(&mut Request)) -> String {
    let mut r = Request::text("Cardiomegaly.", 0);
    f(&mut r);
    r.check().expect_err("the value was accepted").to_string()
}

#[test]
fn the_same_bad_value_gets_the_same_sentence_from_cli_batch_and_page() {
    let dir = scratch("sentences");
    let table = dir.join("t.csv");
    std::fs::write(&table, "prompt\nCardiomegaly.\n").unwrap();
    let out = dir.join("out.png");
    let model = fixture("tiny-sd");
    let m = model.to_str().unwrap();
    // (flag, value, the page's settings with the same value, the library's request)
    type Case = (
        &'static str,
        &'static str,
        Box<dyn Fn(&mut Settings)>,
        Box<dyn Fn(&mut Request)>,
    );
    let cases: Vec<Case> = vec![
        (
            "--steps",
            "0",
            Box::new(|s| s.steps = 0),
            Box::new(|r| r.sampling.steps = Some(0)),
        ),
        (
            "--steps",
            "1001",
            Box::new(|s| s.steps = 1001),
            Box::new(|r| r.sampling.steps = Some(1001)),
        ),
        (
            "--guidance",
            "NaN",
            Box::new(|s| s.guidance = f32::NAN),
            Box::new(|r| r.sampling.guidance = Some(f32::NAN)),
        ),
        (
            "--guidance",
            "-1",
            Box::new(|s| s.guidance = -1.0),
            Box::new(|r| r.sampling.guidance = Some(-1.0)),
        ),
        (
            "--guidance",
            "101",
            Box::new(|s| s.guidance = 101.0),
            Box::new(|r| r.sampling.guidance = Some(101.0)),
        ),
        (
            "--width",
            "100",
            Box::new(|s| s.size = 100),
            Box::new(|r| r.sampling.width = Some(100)),
        ),
        (
            "--width",
            "4096",
            Box::new(|s| s.size = 4096),
            Box::new(|r| r.sampling.width = Some(4096)),
        ),
    ];
    for (flag, value, page, lib) in &cases {
        let want = sentence(lib.as_ref());
        // the CLI's generate
        let (code, err) = roentgen(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "x",
            "--output",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(code, Some(1), "{flag} {value}: {err}");
        assert!(
            err.contains(&want),
            "generate {flag} {value}: wanted {want:?} in {err}"
        );
        assert!(!out.exists());
        // the CLI's batch (the table's shared settings)
        let (code, err) = roentgen(&[
            "batch",
            "--model",
            m,
            "--prompts",
            table.to_str().unwrap(),
            "--output-dir",
            dir.join("ds").to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(code, Some(1), "batch {flag} {value}: {err}");
        assert!(
            err.contains(&want),
            "batch {flag} {value}: wanted {want:?} in {err}"
        );
        // the page's protocol
        let mut s = Settings::default();
        page(&mut s);
        let got = s
            .request(EditBytes::default())
            .expect_err("the page accepted it")
            .to_string();
        assert_eq!(got, want, "page {flag} {value}");
    }
    assert!(!dir.join("ds/images").exists(), "batch wrote images");

    // the edit's values: generate and the page (a batch has no edit)
    let img = dir.join("init.png");
    let black = dir.join("black.png");
    let meta = Default::default();
    std::fs::write(
        &img,
        roentgen_web::image_io::encode_png(&[128; 64 * 64 * 3], 64, 64, 3, &meta).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &black,
        roentgen_web::image_io::encode_png(&[0; 64 * 64], 64, 64, 1, &meta).unwrap(),
    )
    .unwrap();
    let edit = |mask: Option<bool>, strength: Option<f32>| {
        move |r: &mut Request| {
            r.edit = Some(EditRequest {
                width: 64,
                height: 64,
                rgb: vec![128.0 / 255.0; 64 * 64 * 3],
                mask: mask.map(|m| vec![m; 64 * 64]),
                strength,
                inversion: None,
            })
        }
    };
    let page = |masked: bool, strength: Option<f32>| {
        let s = Settings {
            size: 64,
            edit: Some(EditSettings {
                strength,
                masked,
                radedit: None,
            }),
            ..Settings::default()
        };
        s.request(EditBytes {
            rgb: Some(&[128; 64 * 64 * 3]),
            mask: Some(&[0; 64 * 64]),
            keep: None,
        })
        .expect_err("the page accepted it")
        .to_string()
    };
    for (args, want, from_page) in [
        (
            vec!["--mask", black.to_str().unwrap()],
            sentence(&edit(Some(false), None)),
            page(true, None),
        ),
        (
            vec!["--strength", "1.5"],
            sentence(&edit(None, Some(1.5))),
            page(false, Some(1.5)),
        ),
    ] {
        let mut a = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "x",
            "--output",
            out.to_str().unwrap(),
            "--init-image",
            img.to_str().unwrap(),
        ];
        a.extend(args.iter().copied());
        let (code, err) = roentgen(&a);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: wanted {want:?} in {err}");
        assert_eq!(from_page, want, "page {args:?}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tEXt chunk `key` of a PNG.
fn png_text(bytes: &[u8], key: &str) -> Option<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == key)
        .map(|t| t.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|t| t.keyword == key)
                .and_then(|t| t.get_text().ok())
        })
}

#[test]
fn an_sd2_folder_runs_roentgen_v2s_recipe_unless_told_otherwise() {
    let dir = scratch("sd2");
    let out = dir.join("v2.png");
    let m = fixture("tiny-sd-alt");
    let base = [
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "Cardiomegaly.",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--output",
        out.to_str().unwrap(),
    ];
    let (code, err) = roentgen(&base);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("guidance 3") && err.contains("RoentGen v2 (SD 2.x) recipe"),
        "the settings used are not printed: {err}"
    );
    let png = std::fs::read(&out).unwrap();
    assert_eq!(png_text(&png, "guidance").as_deref(), Some("3"));
    assert_eq!(png_text(&png, "scheduler").as_deref(), Some("pndm"));
    // the user's value wins
    let mut told = base.to_vec();
    told.extend(["--guidance", "5"]);
    let (code, err) = roentgen(&told);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        png_text(&std::fs::read(&out).unwrap(), "guidance").as_deref(),
        Some("5")
    );
    // an SD 1.x folder keeps RoentGen v1's guidance 4
    let (code, err) = roentgen(&[
        "generate",
        "--model",
        fixture("tiny-sd").to_str().unwrap(),
        "--prompt",
        "x",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("RoentGen v1 (SD 1.x) recipe"), "{err}");
    assert_eq!(
        png_text(&std::fs::read(&out).unwrap(), "guidance").as_deref(),
        Some("4")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of tiny-sd whose `file` config has `key` set to `value`.
fn altered(dir: &Path, file: &str, key: &str, value: u64) -> PathBuf {
    let copy = dir.join(format!("{}-{key}", file.replace('/', "_")));
    for entry in [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ] {
        let from = fixture("tiny-sd").join(entry);
        let to = copy.join(entry);
        if from.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&from).unwrap().flatten() {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::create_dir_all(&copy).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let path = copy.join(file);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v[key] = value.into();
    std::fs::write(&path, v.to_string()).unwrap();
    copy
}

#[test]
fn mismatched_parts_are_refused_naming_both_parts_and_numbers() {
    let dir = scratch("parts");
    let out = dir.join("out.png");
    for (file, key, value, says) in [
        (
            "unet/config.json",
            "cross_attention_dim",
            36,
            [
                "text encoder (text_encoder/config.json) gives 32-wide",
                "cross_attention_dim of 36",
            ],
        ),
        (
            "vae/config.json",
            "latent_channels",
            8,
            [
                "VAE (vae/config.json) has 8 latent channels",
                "UNet (unet/config.json) has in_channels 4",
            ],
        ),
    ] {
        let model = altered(&dir, file, key, value);
        let (code, err) = roentgen(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "x",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "{key}: {err}");
        assert!(!err.contains("panicked"), "{key}: {err}");
        for s in says {
            assert!(err.contains(s), "{key}: wanted {s:?} in {err}");
        }
        assert!(!out.exists(), "{key}: an output was written");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RadEdit's edit: the CLI's `generate --edit-mask/--keep-mask/--skip` and the page's
/// protocol (its settings and mask bytes, then the loaded model's plan, as the worker
/// runs them) give the same sentence for the same bad value, from the request's own
/// checks and from the plan's (which need the model: its scheduler, its latent grid).
#[test]
fn radedits_edit_gets_the_same_sentence_from_the_cli_and_the_page() {
    let dir = scratch("radedit");
    let out = dir.join("out.png");
    let model = fixture("tiny-radedit");
    let side = 64;
    let px = side * side;
    let meta = Default::default();
    let png = |name: &str, gray: &[u8]| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            roentgen_web::image_io::encode_png(gray, side, side, 1, &meta).unwrap(),
        )
        .unwrap();
        p
    };
    // the edit mask: the top half; masks as the page sends them (1 = in the mask)
    let top: Vec<u8> = (0..px).map(|i| u8::from(i < px / 2)).collect();
    let img = png("init.png", &vec![128; px]);
    let edit_png = png(
        "edit.png",
        &top.iter().map(|&m| m * 255).collect::<Vec<_>>(),
    );
    let black = png("black.png", &vec![0; px]);
    let white = png("white.png", &vec![255; px]);
    let ck = Checkpoint::new(DirSource::new(&model).unwrap(), LoadOptions::default()).unwrap();
    let pipe = pollster::block_on(Pipeline::load(common::gpu(), &ck, &mut |_| {})).unwrap();
    // the page: settings and bytes, checked by the protocol, then planned by the model
    let page = |mask: &[u8], keep: Option<&[u8]>, skip: f32, scheduler: &str| {
        let s = Settings {
            size: side,
            scheduler: scheduler.into(),
            edit: Some(EditSettings {
                strength: None,
                masked: true,
                radedit: Some(RadEditSettings {
                    skip,
                    keep: keep.is_some(),
                    ..Default::default()
                }),
            }),
            ..Settings::default()
        };
        let rgb = vec![128u8; px * 3];
        let bytes = EditBytes {
            rgb: Some(&rgb),
            mask: Some(mask),
            keep,
        };
        match s.request(bytes) {
            Err(e) => e.to_string(),
            Ok(r) => pipe
                .plan(r)
                .expect_err("the page's request was planned")
                .to_string(),
        }
    };
    let m = model.to_str().unwrap();
    let (black_s, white_s, edit_s) = (
        black.to_str().unwrap(),
        white.to_str().unwrap(),
        edit_png.to_str().unwrap(),
    );
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["--edit-mask", black_s],
            page(&vec![0; px], None, 0.3, "ddim"),
            "the edit mask is empty",
        ),
        (
            vec!["--edit-mask", edit_s, "--keep-mask", white_s],
            page(&top, Some(&vec![1; px]), 0.3, "ddim"),
            "the keep mask covers the whole image",
        ),
        (
            vec!["--edit-mask", edit_s, "--skip", "1"],
            page(&top, None, 1.0, "ddim"),
            "the skip ratio must be a number from 0 to below 1",
        ),
        // the plan's: the keep mask over the whole edit mask, another scheduler
        (
            vec!["--edit-mask", edit_s, "--keep-mask", edit_s],
            page(&top, Some(&top), 0.3, "ddim"),
            "the keep mask covers the whole edit mask",
        ),
        (
            vec!["--edit-mask", edit_s, "--scheduler", "pndm"],
            page(&top, None, 0.3, "pndm"),
            "choose the ddim scheduler",
        ),
    ];
    for (args, from_page, want) in cases {
        assert!(from_page.contains(want), "page {args:?}: {from_page}");
        let mut a = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "Large left pleural effusion.",
            "--steps",
            "4",
            "--output",
            out.to_str().unwrap(),
            "--init-image",
            img.to_str().unwrap(),
        ];
        a.extend(args.iter().copied());
        let (code, err) = roentgen(&a);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&from_page),
            "{args:?}: the page says {from_page:?}, the CLI {err}"
        );
        assert!(!out.exists());
    }
    // and the library's own request says it too
    let lib = sentence(&|r: &mut Request| {
        r.edit = Some(EditRequest {
            width: side,
            height: side,
            rgb: vec![0.5; px * 3],
            mask: Some(vec![false; px]),
            strength: None,
            inversion: Some(Inversion::default()),
        })
    });
    assert_eq!(lib, page(&vec![0; px], None, 0.3, "ddim"));
    std::fs::remove_dir_all(&dir).unwrap();
}
