//! Getting a checkpoint in: which files of a picked folder an import copies, and loading
//! a weight file tensor by tensor (the browser streams each tensor from a `Blob` into a
//! GPU buffer; a 3.4 GB UNet must never sit whole in wasm32's 4 GB).

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use roentgen_web::checkpoint::{plan_import, remote_candidates};
use roentgen_web::loader::{RangeRead, WeightFile};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Every file under `dir`, as `prefix/relative/path`.
fn files_under(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            out.extend(files_under(&e.path(), &name));
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn an_import_copies_configs_tokenizer_and_one_weight_file_per_model() {
    let paths = files_under(&Path::new(FIXTURES).join("tiny-sd"), "tiny-sd");
    let plan = plan_import(&paths, false).unwrap();
    let stored: Vec<&str> = plan.iter().map(|(_, p)| p.as_str()).collect();
    for want in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    ] {
        assert!(stored.contains(&want), "{want} missing from {stored:?}");
    }
    for (picked, path) in &plan {
        assert_eq!(picked, &format!("tiny-sd/{path}"));
    }
    // Every planned file exists and nothing is planned twice.
    let mut sorted = stored.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), stored.len());
}

#[test]
fn an_import_skips_the_safety_checker_and_unused_variants() {
    let mut paths = files_under(&Path::new(FIXTURES).join("tiny-sd"), "roentgen");
    paths.push("roentgen/safety_checker/model.safetensors".into());
    paths.push("roentgen/unet/diffusion_pytorch_model.bin".into());
    paths.push("roentgen/unet/diffusion_pytorch_model.fp16.safetensors".into());
    let plan = plan_import(&paths, false).unwrap();
    let unet: Vec<&str> = plan
        .iter()
        .map(|(_, p)| p.as_str())
        .filter(|p| p.starts_with("unet/"))
        .collect();
    assert_eq!(
        unet,
        [
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors"
        ]
    );
    assert!(!plan.iter().any(|(_, p)| p.starts_with("safety_checker")));
    let f16 = plan_import(&paths, true).unwrap();
    assert!(
        f16.iter()
            .any(|(_, p)| p == "unet/diffusion_pytorch_model.fp16.safetensors")
    );
}

#[test]
fn picking_the_parent_folder_finds_the_checkpoint_inside() {
    let mut paths = files_under(&Path::new(FIXTURES).join("tiny-sd"), "downloads/roentgen");
    paths.push("downloads/notes.txt".into());
    let plan = plan_import(&paths, false).unwrap();
    assert!(
        plan.iter()
            .all(|(picked, path)| *picked == format!("downloads/roentgen/{path}"))
    );
}

#[test]
fn a_folder_missing_a_weight_file_is_refused_naming_it() {
    let paths: Vec<String> = files_under(&Path::new(FIXTURES).join("tiny-sd"), "tiny-sd")
        .into_iter()
        .filter(|p| !p.starts_with("tiny-sd/vae/diffusion_pytorch_model"))
        .collect();
    let msg = plan_import(&paths, false).unwrap_err().to_string();
    assert!(msg.contains("no weight file for `vae`"), "{msg}");
    assert!(msg.contains("vae/diffusion_pytorch_model"), "{msg}");

    let paths: Vec<String> = files_under(&Path::new(FIXTURES).join("tiny-sd"), "tiny-sd")
        .into_iter()
        .filter(|p| !p.ends_with("merges.txt"))
        .collect();
    let msg = plan_import(&paths, false).unwrap_err().to_string();
    assert!(msg.contains("merges.txt"), "{msg}");

    let msg = plan_import(&["photos/a.png".into()], false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model_index.json"), "{msg}");
}

/// A RadEdit folder: BERT's WordPiece tokenizer (`vocab.txt` and its
/// `tokenizer_config.json`) and the CXR-BERT text encoder as `pytorch_model.bin` are
/// copied; a tokenizer folder with none of the layouts is refused saying what it needs.
#[test]
fn a_radedit_folder_imports_its_wordpiece_tokenizer() {
    let paths = files_under(&Path::new(FIXTURES).join("tiny-radedit"), "tiny-radedit");
    let plan = plan_import(&paths, false).unwrap();
    let stored: Vec<&str> = plan.iter().map(|(_, p)| p.as_str()).collect();
    for want in [
        "tokenizer/vocab.txt",
        "tokenizer/tokenizer_config.json",
        "text_encoder/config.json",
        "text_encoder/pytorch_model.bin",
        "scheduler/scheduler_config.json",
    ] {
        assert!(stored.contains(&want), "{want} missing from {stored:?}");
    }
    // special_tokens_map.json comes along where the folder has one
    let mut with_map = paths.clone();
    with_map.push("tiny-radedit/tokenizer/special_tokens_map.json".into());
    let plan = plan_import(&with_map, false).unwrap();
    assert!(
        plan.iter()
            .any(|(_, p)| p == "tokenizer/special_tokens_map.json")
    );
    let without: Vec<String> = paths
        .into_iter()
        .filter(|p| !p.ends_with("vocab.txt"))
        .collect();
    let msg = plan_import(&without, false).unwrap_err().to_string();
    assert!(msg.contains("tokenizer/vocab.json"), "{msg}");
    assert!(msg.contains("vocab.txt (BERT WordPiece, RadEdit)"), "{msg}");
}

/// The family a checkpoint's configs say (what the page's model list shows for each
/// stored model): the text encoder's config and the scheduler's prediction type.
#[test]
fn a_checkpoint_says_its_family() {
    use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
    use roentgen_web::generation::Family;
    for (fixture, want) in [
        ("tiny-sd", Some(Family::Sd1)),
        ("tiny-sd-alt", Some(Family::Sd2)),
        ("tiny-radedit", Some(Family::RadEdit)),
    ] {
        let ck = Checkpoint::new(
            DirSource::new(Path::new(FIXTURES).join(fixture)).unwrap(),
            LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(pollster::block_on(ck.family()).unwrap(), want, "{fixture}");
    }
}

/// A file read at offsets that counts what it hands out.
struct Counting {
    bytes: Vec<u8>,
    read: Rc<Cell<usize>>,
    calls: Rc<Cell<usize>>,
}

impl RangeRead for Counting {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> roentgen_web::Result<Vec<u8>> {
        self.read.set(self.read.get() + len);
        self.calls.set(self.calls.get() + 1);
        self.bytes.read_at(offset, len)
    }
}

fn open_counting(path: &str) -> (WeightFile, WeightFile, usize, usize, usize) {
    let bytes = std::fs::read(Path::new(FIXTURES).join(path)).unwrap();
    let (read, calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let streamed = WeightFile::open(
        path,
        Box::new(Counting {
            bytes: bytes.clone(),
            read: read.clone(),
            calls: calls.clone(),
        }),
    )
    .unwrap();
    let whole = WeightFile::parse(path, bytes.clone()).unwrap();
    (streamed, whole, read.get(), calls.get(), bytes.len())
}

#[test]
fn weight_files_are_indexed_from_their_metadata_only() {
    // safetensors: the 8-byte length, then the header (one read of at least 64 KiB
    // covers both here).
    let (streamed, whole, read, calls, len) =
        open_counting("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    assert_eq!(streamed.index.tensors, whole.index.tensors);
    assert!(calls <= 2, "{calls} reads");
    assert!(read * 10 < len, "read {read} of {len} bytes just to index");

    // PyTorch zip: directory, data.pkl and one small local header per tensor.
    let (streamed, whole, read, _, len) =
        open_counting("tiny-sd-bin/unet/diffusion_pytorch_model.bin");
    assert_eq!(streamed.index.tensors, whole.index.tensors);
    assert!(read < len, "read {read} of {len} bytes just to index");
}

#[test]
fn a_truncated_weight_file_fails_with_its_name_when_streamed() {
    let path = "tiny-sd/vae/diffusion_pytorch_model.safetensors";
    let mut bytes = std::fs::read(Path::new(FIXTURES).join(path)).unwrap();
    bytes.truncate(bytes.len() / 2);
    let r = WeightFile::open(path, Box::new(bytes));
    let msg = match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a truncated file indexed"),
    };
    assert!(msg.contains(path), "{msg}");
}

/// A download from a URL asks for `remote_candidates` (HTTP lists no folder) and plans
/// from those the server has: it must pick exactly what importing the folder picks, for
/// both fixture layouts (plain and fp16-variant safetensors).
#[test]
fn a_download_from_a_url_picks_what_a_folder_import_picks() {
    let candidates = remote_candidates();
    for fixture in ["tiny-sd", "tiny-sd-alt", "tiny-radedit"] {
        let inside = files_under(&Path::new(FIXTURES).join(fixture), "");
        let inside: Vec<String> = inside.iter().map(|p| p[1..].to_string()).collect();
        let from_folder = plan_import(&inside, false).unwrap();
        let served: Vec<String> = candidates
            .iter()
            .filter(|c| inside.contains(c))
            .cloned()
            .collect();
        let from_url = plan_import(&served, false).unwrap();
        let mut a: Vec<_> = from_folder.iter().map(|(_, p)| p.clone()).collect();
        let mut b: Vec<_> = from_url.iter().map(|(_, p)| p.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{fixture}");
    }
}

/// A reader that fails after some reads, as a disk or a browser file that goes away.
struct FailingAfter {
    bytes: Vec<u8>,
    calls: Cell<usize>,
    ok: usize,
}

impl RangeRead for FailingAfter {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> roentgen_web::Result<Vec<u8>> {
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() > self.ok {
            return Err(roentgen_web::Error::Input(
                "the file went away while it was read".into(),
            ));
        }
        self.bytes.read_at(offset, len)
    }
}

#[test]
fn a_read_that_fails_while_indexing_is_the_error_reported() {
    // a torch zip needs several reads to index (directory, data.pkl, local headers):
    // the second one fails
    let path = "tiny-sd-bin/unet/diffusion_pytorch_model.bin";
    let bytes = std::fs::read(Path::new(FIXTURES).join(path)).unwrap();
    let r = WeightFile::open(
        path,
        Box::new(FailingAfter {
            bytes,
            calls: Cell::new(0),
            ok: 1,
        }),
    );
    let msg = match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("indexed although a read failed"),
    };
    assert!(msg.contains("went away"), "{msg}");
}
