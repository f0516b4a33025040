//! `--model ORG/NAME` through a local stand-in for the Hugging Face Hub
//! (tests/common/hub_standin.rs), everything on 127.0.0.1: the same image as the folder,
//! huggingface_hub's cache layout both ways, offline with the server stopped, gated repos
//! and tokens, a cut download resumed, a model assembled from three repos, and names
//! and redirects that are refused. Tiny fixture, 2 steps at 64x64.

#[path = "common/hub_standin.rs"]
mod hub_standin;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use hub_standin::{Config, Standin, git_blob_oid, sha256_hex};

const WEIGHTS: [&str; 3] = [
    "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("roentgen-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

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

fn files_of(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn serve(repos: &[(&str, &Path)], f: impl FnOnce(&mut Config)) -> Standin {
    let mut c = Config {
        repos: repos
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_path_buf()))
            .collect(),
        ..Default::default()
    };
    f(&mut c);
    Standin::start(c).expect("the stand-in starts")
}

/// Runs the CLI in `cwd` with the Hub variables `env` (all others of the caller's
/// removed): (exit code, stderr).
fn roentgen(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roentgen"));
    cmd.args(args)
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("RUST_BACKTRACE", "0");
    for k in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the roentgen binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `generate` of the tiny model named `model` into `out`; its PNG's bytes.
fn generate(cwd: &Path, env: &[(&str, &str)], model: &str, out: &Path) -> Vec<u8> {
    let (code, err) = roentgen(cwd, env, &gen_args(model, out));
    assert_eq!(code, Some(0), "generate --model {model}: {err}");
    std::fs::read(out).unwrap()
}

fn gen_args<'a>(model: &'a str, out: &'a Path) -> Vec<&'a str> {
    vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "Small right-sided pleural effusion.",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "7",
        "--output",
        out.to_str().unwrap(),
    ]
}

/// The PNG the tiny fixture folder gives when named `org/tiny-sd` (a folder of that
/// name in the working directory wins over the repo, as in diffusers).
fn folder_png(dir: &Path) -> Vec<u8> {
    let cwd = dir.join("with-folder");
    copy_dir(&fixture(), &cwd.join("org/tiny-sd"));
    // An endpoint nobody answers: the folder must win without asking.
    generate(
        &cwd,
        &[("HF_ENDPOINT", "http://127.0.0.1:9")],
        "org/tiny-sd",
        &dir.join("folder.png"),
    )
}

/// The cache as huggingface_hub leaves it: `refs/main` holds the commit, every snapshot
/// file a relative symlink to `blobs/<etag>` (sha256 for weights, git's sha1 otherwise).
fn check_layout(cache: &Path, repo: &str, commit: &str, source: &Path) {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        commit
    );
    let snap = root.join("snapshots").join(commit);
    let files = files_of(&snap);
    assert_eq!(
        files,
        files_of(source),
        "the snapshot holds exactly the files the pipeline reads"
    );
    for f in &files {
        let link = snap.join(f);
        let bytes = std::fs::read(source.join(f)).unwrap();
        let etag = if WEIGHTS.contains(&f.as_str()) {
            sha256_hex(&bytes)
        } else {
            git_blob_oid(&bytes)
        };
        let up = "../".repeat(2 + f.matches('/').count());
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from(format!("{up}blobs/{etag}")),
            "{f}"
        );
        assert_eq!(std::fs::read(&link).unwrap(), bytes, "{f}");
    }
    let leftovers: Vec<String> = files_of(&root.join("blobs"))
        .into_iter()
        .filter(|b| b.ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_repo_gives_the_folders_png_leaves_huggingface_hubs_layout_and_works_offline() {
    let dir = scratch("same-png");
    let want = folder_png(&dir);
    let server = serve(&[("org/tiny-sd", &fixture())], |_| {});
    let home = dir.join("home");
    let cwd = dir.join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let url = server.url.clone();
    let env = [
        ("HF_ENDPOINT", url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let got = generate(&cwd, &env, "org/tiny-sd", &dir.join("repo.png"));
    assert!(got == want, "the repo's PNG differs from the folder's");
    let commit = server.commit("org/tiny-sd");
    check_layout(&home.join("hub"), "org/tiny-sd", &commit, &fixture());
    // A second run asks only for the commit: nothing is downloaded again.
    let before = server.log().len();
    generate(&cwd, &env, "org/tiny-sd", &dir.join("again.png"));
    let asked: Vec<String> = server.log()[before..].to_vec();
    assert_eq!(
        asked,
        vec!["GET /api/models/org/tiny-sd/revision/main".to_string()]
    );
    // The server gone: the cache, with HF_HUB_OFFLINE=1 and without (as huggingface_hub
    // falls back to it when the Hub cannot be reached).
    server.stop();
    let got = generate(&cwd, &env, "org/tiny-sd", &dir.join("unreachable.png"));
    assert!(
        got == want,
        "the PNG with the Hub unreachable differs from the folder's"
    );
    let offline = [
        ("HF_ENDPOINT", env[0].1),
        ("HF_HOME", env[1].1),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let got = generate(&cwd, &offline, "org/tiny-sd", &dir.join("offline.png"));
    assert!(got == want, "the offline PNG differs from the folder's");
    // Offline with nothing cached: the sentence says what to do.
    let (code, err) = roentgen(&cwd, &offline, &["download", "org/other"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("HF_HUB_OFFLINE is set and org/other@main is not in the cache")
            && err.contains("roentgen download org/other"),
        "{err}"
    );
}

#[test]
fn a_cache_written_by_huggingface_hub_is_used_offline_with_no_server() {
    // Made by hand exactly as huggingface_hub 2.4.0's snapshot_download writes it
    // (tools/check_hub_standin.py checks that layout against the real client), with
    // its extras: trees/<commit>.json, .locks/, CACHEDIR.TAG.
    let dir = scratch("hf-cache");
    let want = folder_png(&dir);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let cache = dir.join("hf-home/hub");
    let root = cache.join("models--org--tiny-sd");
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::create_dir_all(root.join("trees")).unwrap();
    std::fs::create_dir_all(cache.join(".locks/models--org--tiny-sd")).unwrap();
    std::fs::write(
        cache.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    std::fs::write(root.join("refs/main"), commit).unwrap();
    std::fs::write(root.join(format!("trees/{commit}.json")), "{}").unwrap();
    for f in files_of(&fixture()) {
        let bytes = std::fs::read(fixture().join(&f)).unwrap();
        let etag = if WEIGHTS.contains(&f.as_str()) {
            sha256_hex(&bytes)
        } else {
            git_blob_oid(&bytes)
        };
        std::fs::write(root.join("blobs").join(&etag), &bytes).unwrap();
        let link = root.join("snapshots").join(commit).join(&f);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(2 + f.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &link).unwrap();
    }
    let cwd = dir.join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let env = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let got = generate(&cwd, &env, "org/tiny-sd", &dir.join("offline.png"));
    assert!(
        got == want,
        "the PNG from huggingface_hub's cache differs from the folder's"
    );
    // The commit itself as the revision works too.
    let at = format!("org/tiny-sd@{commit}");
    let (code, err) = roentgen(&cwd, &env, &["download", &at]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn gated_repos_need_the_right_token_from_the_environment_or_the_token_file() {
    let dir = scratch("gated");
    let server = serve(&[("org/gated", &fixture())], |c| {
        c.gated.push("org/gated".into());
        c.token = Some("hf_right".into());
    });
    let home = dir.join("home");
    let h = home.to_str().unwrap();
    let url = server.url.as_str();
    let run = |env: &[(&str, &str)]| roentgen(&dir, env, &["download", "org/gated"]);

    let (code, err) = run(&[("HF_ENDPOINT", url), ("HF_HOME", h)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "org/gated is gated: accept its terms at {url}/org/gated and set HF_TOKEN"
        )),
        "{err}"
    );
    // An empty HF_TOKEN is no token.
    let (_, err) = run(&[("HF_ENDPOINT", url), ("HF_HOME", h), ("HF_TOKEN", "")]);
    assert!(err.contains("is gated"), "{err}");
    let (code, err) = run(&[
        ("HF_ENDPOINT", url),
        ("HF_HOME", h),
        ("HF_TOKEN", "hf_wrong"),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the Hub refused the token from HF_TOKEN for org/gated")
            && err.contains(&format!("ask for access at {url}/org/gated")),
        "{err}"
    );
    assert!(
        !err.contains("hf_wrong"),
        "the token is never printed: {err}"
    );
    // The token file, as `huggingface-cli login` writes it.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_wrong\n").unwrap();
    let (code, err) = run(&[("HF_ENDPOINT", url), ("HF_HOME", h)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refused the token from") && err.contains("token"),
        "{err}"
    );
    std::fs::write(home.join("token"), "hf_right\n").unwrap();
    let (code, err) = run(&[("HF_ENDPOINT", url), ("HF_HOME", h)]);
    assert_eq!(code, Some(0), "{err}");
    check_layout(
        &home.join("hub"),
        "org/gated",
        &server.commit("org/gated"),
        &fixture(),
    );
    // The right token in HF_TOKEN, with a fresh cache.
    let other = dir.join("home2");
    let (code, err) = run(&[
        ("HF_ENDPOINT", url),
        ("HF_HOME", other.to_str().unwrap()),
        ("HF_TOKEN", "hf_right"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    // Unknown repo and revision.
    let (_, err) = roentgen(
        &dir,
        &[("HF_ENDPOINT", url), ("HF_HOME", h)],
        &["download", "org/nope"],
    );
    assert!(
        err.contains(&format!("no repository org/nope on {url}")),
        "{err}"
    );
    let (_, err) = roentgen(
        &dir,
        &[("HF_ENDPOINT", url), ("HF_HOME", h)],
        &["download", "org/gated@v9"],
    );
    assert!(err.contains("has no revision `v9`"), "{err}");
}

#[test]
fn a_weight_download_cut_halfway_resumes_on_the_next_run_with_the_same_image() {
    let dir = scratch("resume");
    let want = folder_png(&dir);
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let server = serve(&[("org/tiny-sd", &fixture())], |c| {
        c.cut_once.push(unet.into())
    });
    let home = dir.join("home");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let out = dir.join("cut.png");
    let (code, err) = roentgen(&dir, &env, &gen_args("org/tiny-sd", &out));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("the download of {unet} stopped after"))
            && err.contains("run the same command again to resume"),
        "{err}"
    );
    let size = std::fs::metadata(fixture().join(unet)).unwrap().len();
    let sha = sha256_hex(&std::fs::read(fixture().join(unet)).unwrap());
    let part = home.join(format!("hub/models--org--tiny-sd/blobs/{sha}.incomplete"));
    let kept = std::fs::metadata(&part)
        .expect("the partial blob is kept")
        .len();
    assert_eq!(kept, size / 2);
    assert!(!out.exists());
    let got = generate(&dir, &env, "org/tiny-sd", &out);
    assert!(
        got == want,
        "the resumed model's PNG differs from the folder's"
    );
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.starts_with("cdn GET ") && l.ends_with(&format!("{unet} bytes={kept}-"))),
        "the second run asked for the rest only: {:?}",
        server.log()
    );
    check_layout(
        &home.join("hub"),
        "org/tiny-sd",
        &server.commit("org/tiny-sd"),
        &fixture(),
    );
}

#[test]
fn two_downloads_of_the_same_repo_at_once_both_succeed() {
    let dir = scratch("twice");
    let server = serve(&[("org/tiny-sd", &fixture())], |_| {});
    let home = dir.join("home");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_roentgen"))
            .args(["download", "org/tiny-sd"])
            .env("HF_ENDPOINT", &server.url)
            .env("HF_HOME", &home)
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for p in [a, b] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_layout(
        &home.join("hub"),
        "org/tiny-sd",
        &server.commit("org/tiny-sd"),
        &fixture(),
    );
}

#[test]
fn a_full_disk_keeps_the_partial_and_says_how_to_go_on() {
    // /dev/full answers every write with ENOSPC: the blob's partial file points there.
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here: skipped");
        return;
    }
    let dir = scratch("full");
    let server = serve(&[("org/tiny-sd", &fixture())], |_| {});
    let home = dir.join("home");
    let first = "model_index.json";
    let etag = git_blob_oid(&std::fs::read(fixture().join(first)).unwrap());
    let blobs = home.join("hub/models--org--tiny-sd/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{etag}.incomplete"));
    std::os::unix::fs::symlink("/dev/full", &part).unwrap();
    let (code, err) = roentgen(
        &dir,
        &[
            ("HF_ENDPOINT", &server.url),
            ("HF_HOME", home.to_str().unwrap()),
        ],
        &["download", "org/tiny-sd"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("the disk is full writing {}", part.display()))
            && err.contains("are kept and the next run resumes there"),
        "{err}"
    );
    assert!(
        std::fs::symlink_metadata(&part).is_ok(),
        "the partial is kept"
    );
    assert!(!blobs.join(&etag).exists());
}

#[test]
fn roentgen_v2s_combined_text_encoder_is_fetched_only_when_asked() {
    let dir = scratch("combined");
    let repo = dir.join("repo");
    copy_dir(&fixture(), &repo);
    copy_dir(
        &fixture().join("text_encoder"),
        &repo.join("text_encoder_and_tokenizer"),
    );
    copy_dir(
        &fixture().join("tokenizer"),
        &repo.join("text_encoder_and_tokenizer"),
    );
    let server = serve(&[("org/v2", &repo)], |_| {});
    let home = dir.join("home");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let snap = home
        .join("hub/models--org--v2/snapshots")
        .join(server.commit("org/v2"));
    let (code, err) = roentgen(&dir, &env, &["download", "org/v2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!snap.join("text_encoder_and_tokenizer").exists());
    let (code, err) = roentgen(
        &dir,
        &env,
        &["download", "org/v2", "--text-encoder-and-tokenizer"],
    );
    assert_eq!(code, Some(0), "{err}");
    for f in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        assert!(
            snap.join("text_encoder_and_tokenizer").join(f).is_file(),
            "{f}"
        );
    }
}

/// The tiny model split as RadEdit's is: the UNet in a repo's `unet/`, the VAE at
/// another repo's root, the text encoder and tokenizer together at a third's root.
fn split_repos(dir: &Path) -> [PathBuf; 3] {
    let f = fixture();
    let unet = dir.join("repo-unet");
    copy_dir(&f.join("unet"), &unet.join("unet"));
    std::fs::write(unet.join("README.md"), "a UNet\n").unwrap();
    let vae = dir.join("repo-vae");
    copy_dir(&f.join("vae"), &vae);
    let text = dir.join("repo-text");
    copy_dir(&f.join("text_encoder"), &text);
    copy_dir(&f.join("tokenizer"), &text);
    [unet, vae, text]
}

#[test]
fn a_recipe_of_three_repos_is_assembled_and_gives_the_folders_image() {
    let dir = scratch("recipe");
    let f = fixture();
    // The folder, named as the recipe's model_index will name it.
    let named = dir.join("named");
    copy_dir(&f, &named);
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("model_index.json")).unwrap())
            .unwrap();
    index["_name_or_path"] = "tiny-three".into();
    std::fs::write(named.join("model_index.json"), index.to_string()).unwrap();
    let want = generate(&dir, &[], named.to_str().unwrap(), &dir.join("folder.png"));

    let [unet, vae, text] = split_repos(&dir);
    // A BioViL-T-style repo: CXR-BERT's config and weights with its WordPiece tokenizer
    // at the root (the tiny RadEdit fixture's, 32 wide like this UNet's context).
    let bert = dir.join("repo-bert");
    std::fs::create_dir_all(&bert).unwrap();
    let radedit = f.parent().unwrap().join("tiny-radedit");
    for (from, to) in [
        ("text_encoder/config.json", "config.json"),
        ("text_encoder/pytorch_model.bin", "pytorch_model.bin"),
        ("tokenizer/vocab.txt", "vocab.txt"),
        ("tokenizer/tokenizer_config.json", "tokenizer_config.json"),
    ] {
        std::fs::copy(radedit.join(from), bert.join(to)).unwrap();
    }
    let server = serve(
        &[
            ("org/unet", &unet),
            ("org/vae", &vae),
            ("org/text", &text),
            ("org/bert", &bert),
        ],
        |_| {},
    );
    let scheduler: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    let recipe = |name: &str, text_repo: &str| {
        serde_json::json!({
            "name": name,
            "components": {
                "unet": {"repo": "org/unet", "subfolder": "unet"},
                "vae": {"repo": "org/vae"},
                "text_encoder": {"repo": text_repo},
                "tokenizer": {"repo": text_repo, "revision": "main", "subfolder": ""}
            },
            "scheduler_config": scheduler
        })
        .to_string()
    };
    let file = dir.join("tiny-three.json");
    std::fs::write(&file, recipe("tiny-three", "org/text")).unwrap();
    let home = dir.join("home");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let got = generate(&dir, &env, file.to_str().unwrap(), &dir.join("recipe.png"));
    assert!(
        got == want,
        "the assembled model's PNG differs from the folder's"
    );
    // The assembled folder: symlinks into the three repos' snapshots.
    let assembled = home.join("hub/roentgen-assembled");
    let made: Vec<PathBuf> = std::fs::read_dir(&assembled)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let target =
        std::fs::read_link(made[0].join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert!(
        target.starts_with(home.join("hub/models--org--unet/snapshots")),
        "{}",
        target.display()
    );
    let vae_link = std::fs::read_link(made[0].join("vae/config.json")).unwrap();
    assert!(vae_link.starts_with(home.join("hub/models--org--vae/snapshots")));
    assert!(
        !home
            .join("hub/models--org--unet/snapshots")
            .join(server.commit("org/unet"))
            .join("README.md")
            .exists(),
        "only what the pipeline reads is fetched"
    );
    // A BERT text encoder from a fourth repo (RadEdit's assembly) assembles and generates.
    std::fs::write(&file, recipe("tiny-bert", "org/bert")).unwrap();
    let png = dir.join("bert.png");
    let (code, err) = roentgen(&dir, &env, &gen_args(file.to_str().unwrap(), &png));
    assert_eq!(code, Some(0), "{err}");
    assert!(png.exists(), "{err}");
}

/// A UNet repo that carries its own pipeline (`model_index.json` naming its `unet/` and
/// `scheduler/`, as microsoft/radedit may for `DiffusionPipeline.from_pretrained`): its own
/// parts win over the recipe's (here a scheduler config with other betas, which would
/// change the image), the rest comes from the recipe.
#[test]
fn a_repos_own_model_index_wins_over_the_recipe() {
    let dir = scratch("home-index");
    let f = fixture();
    let named = dir.join("named");
    copy_dir(&f, &named);
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("model_index.json")).unwrap())
            .unwrap();
    index["_name_or_path"] = "tiny-home".into();
    std::fs::write(named.join("model_index.json"), index.to_string()).unwrap();
    let want = generate(&dir, &[], named.to_str().unwrap(), &dir.join("folder.png"));

    let [unet, vae, text] = split_repos(&dir);
    copy_dir(&f.join("scheduler"), &unet.join("scheduler"));
    // its index names parts it does not carry (vae, text encoder): those stay the recipe's
    std::fs::copy(f.join("model_index.json"), unet.join("model_index.json")).unwrap();
    let server = serve(
        &[("org/unet", &unet), ("org/vae", &vae), ("org/text", &text)],
        |_| {},
    );
    let recipe = serde_json::json!({
        "name": "tiny-home",
        "components": {
            "unet": {"repo": "org/unet", "subfolder": "unet"},
            "vae": {"repo": "org/vae"},
            "text_encoder": {"repo": "org/text"},
            "tokenizer": {"repo": "org/text"}
        },
        "scheduler_config": {
            "_class_name": "PNDMScheduler", "beta_schedule": "linear",
            "beta_start": 0.0001, "beta_end": 0.02, "skip_prk_steps": true
        }
    });
    let file = dir.join("tiny-home.json");
    std::fs::write(&file, recipe.to_string()).unwrap();
    let home = dir.join("home");
    let env = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    let got = generate(&dir, &env, file.to_str().unwrap(), &dir.join("recipe.png"));
    assert!(
        got == want,
        "the repo's own scheduler/ was not used: the image differs from the folder's"
    );
}

/// One raw HTTP/1.1 exchange: (status, lower-cased headers, body).
fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Read;
    let host = base.strip_prefix("http://").unwrap();
    let mut c = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, raw[split + 4..].to_vec())
}

fn h<'a>(hs: &'a [(String, String)], k: &str) -> &'a str {
    hs.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The contract the page's tests and scripts rely on (docs/MODELS.md).
#[test]
fn the_stand_in_speaks_the_hubs_protocol_with_cors() {
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let server = serve(
        &[("org/tiny-sd", &fixture()), ("org/gated", &fixture())],
        |c| {
            c.commit = Some(commit.into());
            c.gated.push("org/gated".into());
            c.token = Some("hf_t".into());
        },
    );
    let u = server.url.as_str();
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let bytes = std::fs::read(fixture().join(unet)).unwrap();
    let sha = sha256_hex(&bytes);

    let (s, _, body) = http(
        u,
        "GET",
        &format!("/api/models/org/tiny-sd/revision/{commit}"),
        &[],
    );
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, info["sha"].as_str().unwrap()), (200, commit));
    assert_eq!(
        info["siblings"].as_array().unwrap().len(),
        files_of(&fixture()).len()
    );

    let (s, _, body) = http(
        u,
        "GET",
        "/api/models/org/tiny-sd/tree/main?recursive=true",
        &[],
    );
    let tree: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, 200);
    let e = tree.iter().find(|e| e["path"] == unet).unwrap();
    assert_eq!(e["type"], "file");
    assert_eq!(e["size"], bytes.len() as u64);
    assert_eq!(e["lfs"]["oid"], sha.as_str());
    assert_eq!(e["lfs"]["size"], bytes.len() as u64);
    assert!(e["lfs"]["pointerSize"].as_u64().unwrap() > 100);
    let cfg = tree
        .iter()
        .find(|e| e["path"] == "unet/config.json")
        .unwrap();
    assert_eq!(
        cfg["oid"],
        git_blob_oid(&std::fs::read(fixture().join("unet/config.json")).unwrap()).as_str()
    );
    assert!(cfg.get("lfs").is_none());
    assert!(
        tree.iter()
            .any(|e| e["type"] == "directory" && e["path"] == "unet")
    );
    let (_, _, body) = http(u, "GET", "/api/models/org/tiny-sd/tree/main/unet", &[]);
    let sub: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(sub.len(), 2, "{sub:?}");

    let (s, hs, _) = http(
        u,
        "OPTIONS",
        &format!("/org/gated/resolve/main/{unet}"),
        &[
            ("Origin", "http://127.0.0.1:8080"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization,range"),
        ],
    );
    assert_eq!(s, 204);
    assert_eq!(h(&hs, "access-control-allow-origin"), "*");
    let allowed = h(&hs, "access-control-allow-headers").to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("range"),
        "{allowed}"
    );

    let (s, hs, _) = http(u, "HEAD", &format!("/org/tiny-sd/resolve/main/{unet}"), &[]);
    assert_eq!(s, 302);
    assert_eq!(h(&hs, "x-linked-etag"), format!("\"{sha}\""));
    assert_eq!(h(&hs, "x-linked-size"), bytes.len().to_string());
    assert_eq!(h(&hs, "x-repo-commit"), commit);
    assert!(!h(&hs, "etag").is_empty());
    let expose = h(&hs, "access-control-expose-headers");
    for k in [
        "ETag",
        "X-Repo-Commit",
        "X-Linked-Etag",
        "X-Linked-Size",
        "X-Error-Code",
        "Content-Range",
        "Location",
    ] {
        assert!(expose.contains(k), "{k} not exposed: {expose}");
    }
    let location = h(&hs, "location").to_string();
    assert!(location.starts_with(&server.cdn_url), "{location}");
    let path = &location[server.cdn_url.len()..];
    let (s, hs, body) = http(&server.cdn_url, "GET", path, &[("Range", "bytes=10-19")]);
    assert_eq!(s, 206);
    assert_eq!(
        h(&hs, "content-range"),
        format!("bytes 10-19/{}", bytes.len())
    );
    assert_eq!(body, &bytes[10..20]);

    let (s, hs, body) = http(u, "GET", "/org/tiny-sd/resolve/main/model_index.json", &[]);
    assert_eq!(s, 200);
    assert_eq!(
        body,
        std::fs::read(fixture().join("model_index.json")).unwrap()
    );
    assert_eq!(h(&hs, "etag"), format!("\"{}\"", git_blob_oid(&body)));

    for (path, auth, status, code) in [
        (
            "/org/gated/resolve/main/model_index.json",
            "",
            401,
            "GatedRepo",
        ),
        (
            "/org/gated/resolve/main/model_index.json",
            "Bearer hf_other",
            403,
            "GatedRepo",
        ),
        (
            "/org/gated/resolve/main/model_index.json",
            "Bearer hf_t",
            200,
            "",
        ),
        (
            "/org/nope/resolve/main/model_index.json",
            "",
            404,
            "RepoNotFound",
        ),
        (
            "/org/tiny-sd/resolve/main/nope.json",
            "",
            404,
            "EntryNotFound",
        ),
        (
            "/org/tiny-sd/resolve/v9/model_index.json",
            "",
            404,
            "RevisionNotFound",
        ),
    ] {
        let hdrs: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let (s, hs, body) = http(u, "GET", path, &hdrs);
        assert_eq!((s, h(&hs, "x-error-code")), (status, code), "{path} {auth}");
        if status != 200 {
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(j["error"].is_string(), "{path}");
        }
    }
}

/// A one-trick Hub: every request gets `answer(method, path)`.
fn fake_hub(answer: impl Fn(&str, &str) -> String + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let mut parts = line.split_whitespace();
            let (m, p) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let mut c = conn;
            let _ = c.write_all(answer(m, p).as_bytes());
        }
    });
    url
}

#[test]
fn a_listed_name_leaving_the_cache_and_a_plain_http_redirect_elsewhere_are_refused() {
    let dir = scratch("refused");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let json = |siblings: &[&str]| {
        let s: Vec<String> = siblings
            .iter()
            .map(|n| format!("{{\"rfilename\":\"{n}\"}}"))
            .collect();
        let body = format!("{{\"sha\":\"{commit}\",\"siblings\":[{}]}}", s.join(","));
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut names: Vec<String> = files_of(&fixture());
    names.push("../../../../escape.json".into());
    let listing = json(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let url = fake_hub(move |_, _| listing.clone());
    let home = dir.join("home");
    let (code, err) = roentgen(
        &dir,
        &[("HF_ENDPOINT", &url), ("HF_HOME", home.to_str().unwrap())],
        &["download", "org/evil"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refused org/evil's file name `../../../../escape.json`: it would leave the cache folder"),
        "{err}"
    );
    assert!(!dir.join("escape.json").exists() && !home.join("escape.json").exists());

    // A weight redirected to plain HTTP on another host.
    let names = files_of(&fixture());
    let listing = json(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let url = fake_hub(move |m, p| {
        if p.starts_with("/api/") {
            listing.clone()
        } else if m == "HEAD" {
            "HTTP/1.1 302 Found\r\nLocation: http://198.51.100.7/file\r\nX-Linked-Etag: \"aa\"\r\nX-Linked-Size: 3\r\nETag: \"bb\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        } else {
            "HTTP/1.1 500 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        }
    });
    let (code, err) = roentgen(
        &dir,
        &[("HF_ENDPOINT", &url), ("HF_HOME", home.to_str().unwrap())],
        &["download", "org/evil"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refused a redirect from") && err.contains("to http://198.51.100.7/file"),
        "{err}"
    );
}

#[test]
fn a_blob_whose_sha256_is_not_the_announced_one_never_enters_the_cache() {
    let dir = scratch("checksum");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let siblings: Vec<String> = files_of(&fixture())
        .iter()
        .map(|n| format!("{{\"rfilename\":\"{n}\"}}"))
        .collect();
    let body = format!(
        "{{\"sha\":\"{commit}\",\"siblings\":[{}]}}",
        siblings.join(",")
    );
    let announced = sha256_hex(b"the real bytes");
    let sent = announced.clone();
    let url = fake_hub(move |m, p| {
        if p.starts_with("/api/") {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else if m == "HEAD" {
            // Redirected on the same host (allowed), announcing a sha256 the bytes lack.
            format!(
                "HTTP/1.1 302 Found\r\nLocation: /cdn/file\r\nX-Linked-Etag: \"{sent}\"\r\nX-Linked-Size: 9\r\nETag: \"bb\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntampered!".into()
        }
    });
    let home = dir.join("home");
    let (code, err) = roentgen(
        &dir,
        &[("HF_ENDPOINT", &url), ("HF_HOME", home.to_str().unwrap())],
        &["download", "org/tampered"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "model_index.json arrived whole but its sha256 is {}, not the {announced} the Hub announced: the file was deleted",
            sha256_hex(b"tampered!")
        )),
        "{err}"
    );
    let blobs = home.join("hub/models--org--tampered/blobs");
    assert!(
        files_of(&blobs).is_empty(),
        "nothing stays in blobs/: {:?}",
        files_of(&blobs)
    );
}

#[test]
fn models_lists_the_known_recipes_with_their_sources() {
    let (code, _) = roentgen(Path::new("."), &[], &["models"]);
    assert_eq!(code, Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_roentgen"))
        .arg("models")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "roentgen-v1",
        "StanfordAIMI/roent-gen-v1-0@main",
        "roentgen-v2",
        "stanfordmimi/RoentGen-v2@main",
        "radedit",
        "unet: microsoft/radedit/unet@main",
        "vae: stabilityai/sdxl-vae@main",
        "text_encoder: microsoft/BiomedVLP-BioViL-T@main",
        "DDIMScheduler",
        "https://huggingface.co/microsoft/radedit",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}
