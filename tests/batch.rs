//! `roentgen batch` end to end, through the real binary on lavapipe with the tiny
//! fixture checkpoint at 64x64: shards, seeds, labels, resuming, merging, bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const STEPS: &str = "3";

fn model() -> String {
    format!("{}/tests/fixtures/tiny-sd", env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("roentgen-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the CLI: (success, stderr).
fn roentgen(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_roentgen"));
    c.args(args);
    for k in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "JOB_COMPLETION_INDEX",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("the roentgen binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn batch(table: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (t, o, m) = (table.to_str().unwrap(), out.to_str().unwrap(), model());
    let mut args = vec![
        "batch",
        "--model",
        &m,
        "--prompts",
        t,
        "--output-dir",
        o,
        "--steps",
        STEPS,
        "--width",
        "64",
        "--height",
        "64",
        "--images-per-prompt",
        "2",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    roentgen(&args, env)
}

fn manifest_rows(out: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("shard-")
        })
        .collect();
    names.sort();
    for p in names {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            rows.push(serde_json::from_str(line).unwrap());
        }
    }
    rows
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

const TABLE: &str = "id,prompt,negative_prompt,seed,Edema,Cardiomegaly,age\n\
a,Small right-sided pleural effusion.,,,1,0,63\n\
b,Cardiomegaly.,blurry,,0,1,70\n\
c,\"No acute cardiopulmonary process, no effusion.\",,5,,,\n\
,Mild pulmonary edema.,,,1,,48\n";

#[test]
fn three_shards_make_every_image_once_as_generate_would() {
    let dir = scratch("shards");
    let table = dir.join("prompts.csv");
    std::fs::write(&table, TABLE).unwrap();
    let out = dir.join("out");
    // shards 0 and 1 by --shard, shard 2 as a Slurm array task would get it
    for k in ["0/3", "1/3"] {
        let (ok, err) = batch(&table, &out, &["--shard", k], &[]);
        assert!(ok, "shard {k}: {err}");
    }
    let (ok, err) = batch(
        &table,
        &out,
        &[],
        &[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
    );
    assert!(
        ok && err.contains("shard 2/3 (from the Slurm job array)"),
        "{err}"
    );

    let rows = manifest_rows(&out);
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> =
        ["a-0", "a-1", "b-0", "b-1", "c-0", "c-1", "row4-0", "row4-1"].into();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        want,
        "every (row, j) exactly once"
    );
    let by_id: BTreeMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    // labels carried unchanged, as the CSV's strings (blank stays blank)
    assert_eq!(by_id["a-0"]["Edema"], "1");
    assert_eq!(by_id["b-1"]["Cardiomegaly"], "1");
    assert_eq!(by_id["c-0"]["age"], "");
    assert_eq!(by_id["row4-0"]["age"], "48");
    // the row's own seed + j; the others derived, all different
    assert_eq!(
        (by_id["c-0"]["seed"].as_u64(), by_id["c-1"]["seed"].as_u64()),
        (Some(5), Some(6))
    );
    let seeds: BTreeSet<u64> = rows.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds.len(), 8);
    assert_eq!(by_id["b-0"]["negative_prompt"], "blurry");
    assert_eq!(
        by_id["c-0"]["prompt"],
        "No acute cardiopulmonary process, no effusion."
    );
    for r in &rows {
        let bytes = std::fs::read(out.join(r["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            roentgen_web::batch::manifest::sha256(&bytes),
            r["sha256"].as_str().unwrap()
        );
        assert_eq!(r["weights_sha256"].as_str().unwrap().len(), 64);
    }

    // each image is what `roentgen generate` makes with its row's settings, to the byte
    for id in ["c-1", "b-0"] {
        let r = by_id[id];
        let png = dir.join(format!("{id}.png"));
        let seed = r["seed"].as_u64().unwrap().to_string();
        let (m, p) = (model(), png.to_str().unwrap().to_string());
        let (ok, err) = roentgen(
            &[
                "generate",
                "--model",
                &m,
                "--prompt",
                r["prompt"].as_str().unwrap(),
                "--negative-prompt",
                r["negative_prompt"].as_str().unwrap(),
                "--seed",
                &seed,
                "--steps",
                STEPS,
                "--width",
                "64",
                "--height",
                "64",
                "--output",
                &p,
            ],
            &[],
        );
        assert!(ok, "{err}");
        assert_eq!(
            std::fs::read(&png).unwrap(),
            std::fs::read(out.join(r["file"].as_str().unwrap())).unwrap(),
            "{id}: batch and generate differ"
        );
    }

    // a rerun rewrites nothing
    let before = snapshot(&out);
    let (ok, err) = batch(&table, &out, &["--shard", "0/3"], &[]);
    assert!(ok && err.contains("0 to make"), "{err}");
    assert_eq!(
        snapshot(&out),
        before,
        "a rerun of a complete shard changed files"
    );

    // a truncated image is made again, the same bytes; a new row stands for it
    let victim = out.join(by_id["a-1"]["file"].as_str().unwrap());
    let shard = by_id["a-1"]["shard"].as_str().unwrap().to_string();
    let good = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &good[..good.len() / 2]).unwrap();
    let (ok, err) = batch(&table, &out, &["--shard", &shard], &[]);
    assert!(
        ok && err.contains("1 to make") && err.contains("SHA-256"),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), good);

    // merged: one row per image, Hugging Face's file_name column, a CSV beside it
    let (ok, err) = roentgen(&["batch", "--merge", out.to_str().unwrap()], &[]);
    assert!(
        ok && err.contains("merged 8 images from 3 shard(s)"),
        "{err}"
    );
    let meta = std::fs::read_to_string(out.join("metadata.jsonl")).unwrap();
    let merged: Vec<Value> = meta
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(merged.len(), 8);
    assert!(
        merged
            .iter()
            .all(|r| out.join(r["file_name"].as_str().unwrap()).is_file())
    );
    let csv = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert_eq!(
        csv.lines().next().unwrap().split(',').next(),
        Some("file_name")
    );
    // imagefolder puts the picture in `image`: the index within the row is `image_index`;
    // CheXpert labels (Edema, Cardiomegaly) are numbers or null, other labels the CSV's text
    let m: BTreeMap<&str, &Value> = merged
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for r in &merged {
        assert!(r.get("image").is_none() && r["image_index"].is_u64(), "{r}");
    }
    assert_eq!(
        (&m["a-1"]["image_index"], &m["a-1"]["file"]),
        (&1.into(), &"images/a-1.png".into())
    );
    assert_eq!(
        (&m["a-0"]["Edema"], &m["a-0"]["Cardiomegaly"]),
        (&1.into(), &0.into())
    );
    assert_eq!(
        (&m["c-1"]["Edema"], &m["row4-0"]["Cardiomegaly"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(
        (&m["row4-0"]["age"], &m["c-0"]["age"]),
        (&"48".into(), &"".into())
    );
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert!(
        header.contains(&"image_index") && !header.contains(&"image"),
        "{header:?}"
    );
    // CheXGenBench's CSV: file names under OUT/images/, and the prompts
    let bench = std::fs::read_to_string(out.join("chexgenbench.csv")).unwrap();
    let c0 = "\"No acute cardiopulmonary process, no effusion.\"";
    assert!(
        bench.starts_with("img_savename,prompt,annotated_prompt,synthetic_filename\n")
            && bench.contains(&format!("\nc-0.png,{c0},{c0},c-0.png\n"))
            && bench.lines().count() == 9,
        "{bench}"
    );
    // a shard manifest written before `image_index` (`"image":j`) still resumes: nothing
    // to make again, and the merge is the same
    let shard0 = out.join("shard-0-of-3.jsonl");
    let old = std::fs::read_to_string(&shard0)
        .unwrap()
        .replace("\"image_index\":", "\"image\":");
    std::fs::write(&shard0, old).unwrap();
    let (ok, err) = batch(&table, &out, &["--shard", "0/3"], &[]);
    assert!(ok && err.contains("0 to make"), "{err}");
    let (ok, err) = roentgen(&["batch", "--merge", out.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("metadata.jsonl")).unwrap(),
        meta
    );

    // several images through the UNet together: the same files
    let out2 = dir.join("out-batched");
    let (ok, err) = batch(&table, &out2, &["--batch-size", "3"], &[]);
    assert!(ok, "{err}");
    for r in &rows {
        let f = r["file"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_sentence_and_loses_nothing() {
    let dir = scratch("bad");
    let table = dir.join("prompts.csv");
    std::fs::write(&table, "prompt,Edema\nSmall left pleural effusion.,1\n").unwrap();
    let out = dir.join("out");
    let (ok, err) = batch(&table, &out, &[], &[]);
    assert!(ok, "{err}");
    let good = snapshot(&out);
    assert_eq!(
        good.len(),
        3,
        "two images and a manifest: {:?}",
        good.keys()
    );

    let no_prompt = dir.join("no-prompt.csv");
    std::fs::write(&no_prompt, "impression,Edema\nx,1\n").unwrap();
    let malformed = dir.join("malformed.csv");
    std::fs::write(&malformed, "prompt,Edema\nfine,1\n\"unclosed,1\n").unwrap();
    let too_many = dir.join("fields.csv");
    std::fs::write(&too_many, "prompt,Edema\nfine,1\nmore,1,2\n").unwrap();
    let bad_seed = dir.join("seed.jsonl");
    std::fs::write(
        &bad_seed,
        "{\"prompt\": \"x\"}\n{\"prompt\": \"y\", \"seed\": \"soon\"}\n",
    )
    .unwrap();
    let broken_model = dir.join("model");
    std::fs::create_dir_all(&broken_model).unwrap();
    std::fs::write(broken_model.join("model_index.json"), "{}").unwrap();
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "not a folder").unwrap();

    let t = table.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--prompts".into(), no_prompt.display().to_string()],
            "no `prompt` column",
        ),
        (
            vec!["--prompts".into(), malformed.display().to_string()],
            "line 3",
        ),
        (
            vec!["--prompts".into(), too_many.display().to_string()],
            "line 3: invalid config: 3 fields",
        ),
        (
            vec!["--prompts".into(), bad_seed.display().to_string()],
            "line 2: invalid config: the seed \"soon\"",
        ),
        (vec!["--shard".into(), "3/3".into()], "numbered from 0 to 2"),
        (vec!["--shard".into(), "0/0".into()], "at least 1"),
        (vec!["--steps".into(), "0".into()], "at least 1"),
        (
            vec!["--guidance".into(), "NaN".into()],
            "guidance must be a number",
        ),
        (
            vec!["--format".into(), "tiff".into()],
            "[possible values: png, dcm]",
        ),
        (
            vec!["--images-per-prompt".into(), "0".into()],
            "--images-per-prompt",
        ),
        (
            vec!["--model".into(), broken_model.display().to_string()],
            "text_encoder",
        ),
        (
            vec![
                "--output-dir".into(),
                a_file.join("sub").display().to_string(),
            ],
            "cannot create the output folder",
        ),
        (
            vec![
                "--prompts".into(),
                dir.join("missing.csv").display().to_string(),
            ],
            "reading the prompt table",
        ),
    ];
    for (extra, want) in cases {
        // the later flag wins for --prompts/--model/--output-dir given twice: clap takes
        // the last occurrence only for overridable args, so build the args by hand
        let mut args = vec!["batch".to_string()];
        let mut given = BTreeMap::new();
        for pair in extra.chunks(2) {
            given.insert(pair[0].clone(), pair[1].clone());
        }
        for (k, v) in [
            ("--model", model()),
            ("--prompts", t.to_string()),
            ("--output-dir", out.display().to_string()),
            ("--steps", STEPS.to_string()),
            ("--width", "64".into()),
            ("--height", "64".into()),
            ("--images-per-prompt", "2".into()),
        ] {
            args.push(k.into());
            args.push(given.remove(k).unwrap_or(v));
        }
        for (k, v) in given {
            args.push(k);
            args.push(v);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = roentgen(&refs, &[]);
        assert!(!ok, "{extra:?} should fail");
        assert!(err.contains(want), "{extra:?}: wanted {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
        assert_eq!(
            snapshot(&out),
            good,
            "{extra:?}: a finished image or row changed"
        );
    }

    // another process on the same shard: refused while it holds the manifest
    let manifest = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("shard-0-of-1.jsonl"))
        .unwrap();
    manifest.lock().unwrap();
    let (ok, err) = batch(&table, &out, &[], &[]);
    assert!(
        !ok && err.contains("another `roentgen batch` is writing shard 0/1"),
        "{err}"
    );
    drop(manifest);

    // a manifest line torn by a kill is cut; its image is made again
    let path = out.join("shard-0-of-1.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap().to_string();
    let cut = &text[..text.len() - last.len() / 2 - 1];
    std::fs::write(&path, cut).unwrap();
    let (ok, err) = batch(&table, &out, &[], &[]);
    assert!(
        ok && err.contains("cut short") && err.contains("1 to make"),
        "{err}"
    );
    assert_eq!(snapshot(&out), good, "repaired and remade: the same files");

    // a rerun with other settings into the same folder is refused before it writes
    let (ok, err) = batch(&table, &out, &["--guidance", "3"], &[]);
    assert!(
        !ok && err.contains("other settings") && err.contains("guidance 4 (now 3)"),
        "{err}"
    );
    assert_eq!(snapshot(&out), good);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ctrl-C (SIGINT) stops a run after the image in flight: what is written is whole and
/// recorded, nothing half-written stays, and the same command finishes the shard.
#[test]
fn ctrl_c_stops_after_the_current_image_and_a_rerun_completes() {
    let dir = scratch("sigint");
    let table = dir.join("prompts.jsonl");
    let rows: String = (0..12)
        .map(|i| format!("{{\"prompt\": \"Finding number {i}.\", \"view\": \"PA\"}}\n"))
        .collect();
    std::fs::write(&table, rows).unwrap();
    let out = dir.join("out");
    let (t, o, m) = (table.to_str().unwrap(), out.to_str().unwrap(), model());
    let args = [
        "batch",
        "--model",
        &m,
        "--prompts",
        t,
        "--output-dir",
        o,
        "--steps",
        STEPS,
        "--width",
        "64",
        "--height",
        "64",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_roentgen"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = out.join("shard-0-of-1.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&manifest)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        == 0
    {
        assert!(t0.elapsed().as_secs() < 300, "no image after 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped:") && err.contains("run the same command again"),
        "{err}"
    );
    let rows = manifest_rows(&out);
    assert!(!rows.is_empty() && rows.len() < 12, "{} rows", rows.len());
    for r in &rows {
        let bytes = std::fs::read(out.join(r["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            roentgen_web::batch::manifest::sha256(&bytes),
            r["sha256"].as_str().unwrap()
        );
        assert_eq!(r["view"], "PA");
    }
    let files = snapshot(&out.join("images"));
    assert_eq!(
        files.len(),
        rows.len(),
        "an image without its row, or a part file: {:?}",
        files.keys()
    );

    let (ok, err) = roentgen(&args, &[]);
    assert!(
        ok && err.contains(&format!("{} already done", rows.len())),
        "{err}"
    );
    let rows = manifest_rows(&out);
    assert_eq!(
        rows.iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len(),
        12
    );
    assert_eq!(rows.len(), 12);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--format dcm`: DICOM files (the writer checked against pydicom by tests/dicom.rs),
/// each one passing dicom3tools' `dciodvfy` with no error, hashed in the manifest like
/// PNGs, skipped by a rerun.
#[test]
fn dicom_datasets() {
    let dir = scratch("dicom");
    let table = dir.join("prompts.csv");
    std::fs::write(&table, "id,prompt,Edema\nx,Mild pulmonary edema.,1\n").unwrap();
    let out = dir.join("out");
    let (ok, err) = batch(&table, &out, &["--format", "dcm"], &[]);
    assert!(ok, "{err}");
    let rows = manifest_rows(&out);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let f = r["file"].as_str().unwrap();
        assert!(f.ends_with(".dcm"), "{f}");
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        common::assert_dciodvfy_accepts(&out.join(f));
        assert_eq!(
            roentgen_web::batch::manifest::sha256(&bytes),
            r["sha256"].as_str().unwrap()
        );
    }
    let before = snapshot(&out);
    let (ok, err) = batch(&table, &out, &["--format", "dcm"], &[]);
    assert!(ok && err.contains("0 to make"), "{err}");
    assert_eq!(snapshot(&out), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
