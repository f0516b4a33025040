//! The CLIP tokenizer against transformers 5.24's `CLIPTokenizer`: the ids in
//! `tests/fixtures/tokenizer_ids.json` were written by it, for each fixture checkpoint's
//! own `tokenizer/` folder (vocab.json + merges.txt, tokenizer.json only, compact vocab.json).

use roentgen_web::Error;
use roentgen_web::tokenizer::{PromptTokenizer, TokenizerFiles};
use serde_json::Value;

const FOLDERS: [&str; 3] = ["tiny-sd", "tiny-sd-bin", "tiny-sd-alt"];

/// The files of a fixture's tokenizer folder, as bytes (absent ones `None`).
struct Folder {
    vocab: Option<Vec<u8>>,
    merges: Option<Vec<u8>>,
    tokenizer: Option<Vec<u8>>,
    config: Option<Vec<u8>>,
    special: Option<Vec<u8>>,
}

impl Folder {
    fn read(name: &str) -> Folder {
        let dir = format!(
            "{}/tests/fixtures/{name}/tokenizer",
            env!("CARGO_MANIFEST_DIR")
        );
        let read = |f: &str| std::fs::read(format!("{dir}/{f}")).ok();
        let folder = Folder {
            vocab: read("vocab.json"),
            merges: read("merges.txt"),
            tokenizer: read("tokenizer.json"),
            config: read("tokenizer_config.json"),
            special: read("special_tokens_map.json"),
        };
        assert!(
            folder.tokenizer.is_some() || folder.vocab.is_some(),
            "{dir}: no tokenizer files"
        );
        folder
    }
    fn files(&self) -> TokenizerFiles<'_> {
        TokenizerFiles {
            vocab_json: self.vocab.as_deref(),
            merges_txt: self.merges.as_deref(),
            tokenizer_json: self.tokenizer.as_deref(),
            tokenizer_config_json: self.config.as_deref(),
            special_tokens_map_json: self.special.as_deref(),
        }
    }
    fn tokenizer(&self) -> PromptTokenizer {
        PromptTokenizer::from_files(self.files()).unwrap()
    }
}

fn load(name: &str) -> PromptTokenizer {
    Folder::read(name).tokenizer()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn small_left_pleural_effusion() {
    for name in FOLDERS {
        let tok = load(name);
        assert_eq!(tok.max_length(), 77, "{name}");
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (49406, 49407, 49407),
            "{name}"
        );
        assert_eq!(
            tok.encode_unpadded("Small left pleural effusion.").unwrap(),
            [49406, 2442, 1823, 926, 33948, 1490, 9364, 269, 49407],
            "{name}"
        );
        let e = tok.encode("Small left pleural effusion.").unwrap();
        assert_eq!(e.ids.len(), 77);
        assert_eq!(e.tokens_used, 9);
        assert_eq!(e.dropped, None);
        assert_eq!(
            &e.ids[..9],
            [49406, 2442, 1823, 926, 33948, 1490, 9364, 269, 49407]
        );
        assert!(e.ids[9..].iter().all(|&i| i == 49407));
    }
}

#[test]
fn fixture_sentences_match_transformers() {
    let path = format!(
        "{}/tests/fixtures/tokenizer_ids.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(cases.len(), 298);
    for name in FOLDERS {
        let tok = load(name);
        let mut bad = Vec::new();
        let mut truncated = 0;
        for case in &cases {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["ids"]);
            let want_77 = ids(&case["ids_77"]);
            let got = tok.encode_unpadded(text).unwrap();
            let e = tok.encode(text).unwrap();
            if got != want || e.ids != want_77 {
                bad.push(format!(
                    "{text:?}\n  want {want:?}\n  got  {got:?}\n  want_77 {want_77:?}\n  got_77  {:?}",
                    e.ids
                ));
                continue;
            }
            assert_eq!(e.tokens_used, want.len().min(77), "{text:?}");
            assert_eq!(e.dropped.is_some(), want.len() > 77, "{text:?}");
            truncated += e.dropped.is_some() as usize;
        }
        println!(
            "{name}: {}/{} sentences match ({truncated} truncated)",
            cases.len() - bad.len(),
            cases.len()
        );
        assert!(
            bad.is_empty(),
            "{name}: {} differ:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
}

#[test]
fn special_token_text_and_case() {
    // Ids from transformers 5.24 for the SD 1.x configs.
    let tok = load("tiny-sd");
    assert_eq!(tok.encode_unpadded("").unwrap(), [49406, 49407]);
    assert_eq!(tok.encode_unpadded(" ").unwrap(), [49406, 49407]);
    // `<|endoftext|>` is matched on the raw text (normalized=false), `<|startoftext|>` after
    // lower-casing (normalized=true).
    assert_eq!(
        tok.encode_unpadded("<|ENDOFTEXT|> hi! !").unwrap(),
        [49406, 27, 347, 40786, 4160, 91, 285, 1883, 256, 256, 49407]
    );
    assert_eq!(
        tok.encode_unpadded("<|StartOfText|>x").unwrap(),
        [49406, 49406, 343, 49407]
    );
    assert_eq!(
        tok.decode(&[49406, 2442, 1823, 49407], true).unwrap(),
        "small left"
    );
}

#[test]
fn sd2_pad_token_is_exclamation_mark() {
    // SD 2.x tokenizer folders name `!` (id 0) as pad_token; transformers then also matches
    // every `!` of a prompt as that special token.
    let f = Folder::read("tiny-sd");
    let edit = |b: &Option<Vec<u8>>| {
        let s = String::from_utf8(b.clone().unwrap()).unwrap();
        assert!(s.contains(r#""pad_token": "<|endoftext|>""#));
        s.replace(r#""pad_token": "<|endoftext|>""#, r#""pad_token": "!""#)
            .into_bytes()
    };
    let config = edit(&f.config);
    let special = edit(&f.special);
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_config_json: Some(&config),
        special_tokens_map_json: Some(&special),
        ..f.files()
    })
    .unwrap();
    assert_eq!((tok.pad_token(), tok.pad_id()), ("!", 0));
    assert_eq!(
        tok.encode_unpadded("hello! world!!").unwrap(),
        [49406, 3306, 0, 1002, 0, 0, 49407]
    );
    let e = tok.encode("Big effusion!").unwrap();
    assert_eq!(&e.ids[..6], [49406, 1205, 1490, 9364, 0, 49407]);
    assert!(e.ids[6..].iter().all(|&i| i == 0));
    assert_eq!((e.ids.len(), e.tokens_used), (77, 6));
}

#[test]
fn truncation_names_the_dropped_words() {
    // 85 tokens: the 77th position falls inside "pneumothorax" (pneu mo thor | ax).
    let text = format!(
        "{}Mild Mild Mild stable cardiomegaly without pneumothorax, and a Cardiomegaly.",
        "Small left pleural effusion. ".repeat(9)
    );
    let want_77: Vec<u32> = [49406]
        .into_iter()
        .chain([2442, 1823, 926, 33948, 1490, 9364, 269].repeat(9))
        .chain([
            16085, 16085, 16085, 10492, 6211, 3693, 2001, 344, 2193, 28714, 617, 4130, 49407,
        ])
        .collect();
    assert_eq!(want_77.len(), 77);
    for name in FOLDERS {
        let tok = load(name);
        let full = tok.encode_unpadded(&text).unwrap();
        assert_eq!(full.len(), 86, "{name}");
        assert_eq!(full[..76], want_77[..76], "{name}");
        let e = tok.encode(&text).unwrap();
        assert_eq!(e.ids, want_77, "{name}");
        assert_eq!(e.tokens_used, 77);
        assert_eq!(
            e.dropped.as_deref(),
            Some("pneumothorax, and a Cardiomegaly."),
            "{name}"
        );
    }
    // Exactly 77 tokens: nothing dropped.
    let tok = load("tiny-sd");
    let fits = format!(
        "{}a b c d e f g h i j k l m n o p q r s",
        "Small left pleural effusion. ".repeat(8)
    );
    let e = tok.encode(&fits).unwrap();
    assert_eq!(tok.encode_unpadded(&fits).unwrap().len(), 77);
    assert_eq!((e.tokens_used, e.dropped), (77, None));
    assert_eq!(e.ids[76], 49407);
}

#[test]
fn missing_files_are_named() {
    let f = Folder::read("tiny-sd");
    let configs_only = TokenizerFiles {
        tokenizer_config_json: f.config.as_deref(),
        special_tokens_map_json: f.special.as_deref(),
        ..TokenizerFiles::default()
    };
    let err = PromptTokenizer::from_files(configs_only).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFile { .. }), "{msg}");
    assert!(
        msg.contains("tokenizer.json") && msg.contains("vocab.json") && msg.contains("merges.txt"),
        "{msg}"
    );

    let vocab_only = TokenizerFiles {
        vocab_json: f.vocab.as_deref(),
        ..configs_only
    };
    let err = PromptTokenizer::from_files(vocab_only).unwrap_err();
    assert!(
        matches!(&err, Error::MissingFile { path, .. } if path == "tokenizer/merges.txt"),
        "{err}"
    );

    let bad = TokenizerFiles {
        vocab_json: Some(b"{not json"),
        merges_txt: f.merges.as_deref(),
        ..configs_only
    };
    let err = PromptTokenizer::from_files(bad).unwrap_err();
    assert!(
        matches!(&err, Error::Config { file, .. } if file == "tokenizer/vocab.json"),
        "{err}"
    );
}

#[test]
fn both_layouts_give_the_same_ids_without_configs() {
    // No configs at all: CLIPTokenizer's defaults (pad = <|endoftext|>, 77 positions).
    let f = Folder::read("tiny-sd");
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        vocab_json: f.vocab.as_deref(),
        merges_txt: f.merges.as_deref(),
        ..TokenizerFiles::default()
    })
    .unwrap();
    assert_eq!((tok.max_length(), tok.pad_id()), (77, 49407));
    let b = Folder::read("tiny-sd-bin");
    let tok_bin = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_json: b.tokenizer.as_deref(),
        ..TokenizerFiles::default()
    })
    .unwrap();
    let text = "Café-au-lait findings? Naïve résumé of the exam. Emoji 🫁 ❤️";
    assert_eq!(tok.encode(text).unwrap(), tok_bin.encode(text).unwrap());
}
