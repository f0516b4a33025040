//! A checkpoint with both `text_encoder/` and RoentGen v2's `text_encoder_and_tokenizer/`:
//! which one loads (and which tokenizer), what the user is told. No GPU: the files the
//! loader would read are checked.

use roentgen_web::checkpoint::{COMBINED_TEXT_DIR, Checkpoint, DirSource, LoadOptions};
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

fn open(dir: &Path, combined: bool) -> Checkpoint<DirSource> {
    let options = LoadOptions {
        text_encoder_and_tokenizer: combined,
        ..Default::default()
    };
    Checkpoint::new(DirSource::new(dir).unwrap(), options).unwrap()
}

#[test]
fn both_text_encoders_default_to_diffusers_choice_and_the_other_on_request() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = std::env::temp_dir().join(format!("roentgen-te-choice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&fixtures.join("tiny-sd"), &tmp);

    // one folder only: no choice, nothing said
    let ck = open(&tmp, false);
    assert_eq!(ck.text_encoder_dir(), "text_encoder");
    assert_eq!(ck.text_encoder_note(), None);
    // asked for the combined folder that is not there: said, text_encoder/ used
    let ck = open(&tmp, true);
    assert_eq!(ck.text_encoder_dir(), "text_encoder");
    assert!(
        ck.text_encoder_note()
            .unwrap()
            .contains("has no text_encoder_and_tokenizer/config.json")
    );

    // the combined folder: another text encoder, with its own tokenizer files
    let combined = tmp.join(COMBINED_TEXT_DIR);
    copy_dir(&fixtures.join("tiny-sd-heavy/text_encoder"), &combined);
    copy_dir(&fixtures.join("tiny-sd/tokenizer"), &combined);
    let ck = open(&tmp, false);
    assert_eq!(ck.text_encoder_dir(), "text_encoder");
    assert_eq!(ck.tokenizer_dir(), "tokenizer");
    assert_eq!(
        ck.weight_files().unwrap()[0],
        "text_encoder/model.safetensors"
    );
    assert!(
        ck.text_encoder_note()
            .unwrap()
            .contains("using text_encoder/ (as diffusers does)")
    );
    let ck = open(&tmp, true);
    assert_eq!(ck.text_encoder_dir(), COMBINED_TEXT_DIR);
    assert_eq!(ck.tokenizer_dir(), COMBINED_TEXT_DIR);
    assert_eq!(
        ck.weight_files().unwrap()[0],
        "text_encoder_and_tokenizer/model.safetensors"
    );
    assert!(
        ck.text_encoder_note()
            .unwrap()
            .contains("its own tokenizer")
    );

    // without text_encoder/, the combined folder is used and that is said
    std::fs::remove_dir_all(tmp.join("text_encoder")).unwrap();
    let ck = open(&tmp, false);
    assert_eq!(ck.text_encoder_dir(), COMBINED_TEXT_DIR);
    assert!(
        ck.text_encoder_note()
            .unwrap()
            .contains("has no text_encoder/")
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A BERT text encoder in `text_encoder_and_tokenizer/` with its own WordPiece
/// `vocab.txt`: that folder's tokenizer is the one read.
#[test]
fn a_combined_folder_with_a_wordpiece_vocabulary_uses_its_own_tokenizer() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = std::env::temp_dir().join(format!("roentgen-te-wordpiece-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&fixtures.join("tiny-radedit"), &tmp);
    let combined = tmp.join(COMBINED_TEXT_DIR);
    copy_dir(&fixtures.join("tiny-radedit/text_encoder"), &combined);
    copy_dir(&fixtures.join("tiny-radedit/tokenizer"), &combined);
    let ck = open(&tmp, true);
    assert_eq!(ck.text_encoder_dir(), COMBINED_TEXT_DIR);
    assert_eq!(ck.tokenizer_dir(), COMBINED_TEXT_DIR);
    assert!(pollster::block_on(ck.tokenizer()).unwrap().is_wordpiece());
    // without its own vocabulary, tokenizer/'s
    std::fs::remove_file(combined.join("vocab.txt")).unwrap();
    assert_eq!(open(&tmp, true).tokenizer_dir(), "tokenizer");
    std::fs::remove_dir_all(&tmp).unwrap();
}
