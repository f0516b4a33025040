//! The CLIP tokenizer against transformers 5.24's `CLIPTokenizer`: the ids in
//! `tests/fixtures/tokenizer_ids.json` were written by it, for each fixture checkpoint's
//! own `tokenizer/` folder (vocab.json + merges.txt, tokenizer.json only, compact vocab.json).
//!
//! The WordPiece tokenizer against transformers 5.24's `BertTokenizer(do_lower_case=True,
//! model_max_length=128)` (RadEdit's): `tests/fixtures/wordpiece/ids.json` and
//! `ids_options.json` (tools/make_tokenizer_fixtures.py), from `vocab.txt` and from
//! `fast/tokenizer.json`. Ids, texts and decodes must be equal, no tolerance.

use roentgen_web::Error;
use roentgen_web::tokenizer::{PromptTokenizer, TokenizerFiles, TokenizerKind};
use serde_json::Value;

const FOLDERS: [&str; 3] = ["tiny-sd", "tiny-sd-bin", "tiny-sd-alt"];

/// The files of a fixture's tokenizer folder, as bytes (absent ones `None`).
struct Folder {
    vocab: Option<Vec<u8>>,
    merges: Option<Vec<u8>>,
    vocab_txt: Option<Vec<u8>>,
    tokenizer: Option<Vec<u8>>,
    config: Option<Vec<u8>>,
    special: Option<Vec<u8>>,
}

impl Folder {
    /// A fixture checkpoint's `tokenizer/` folder.
    fn read(name: &str) -> Folder {
        Folder::at(&format!("{name}/tokenizer"))
    }
    /// Any folder under tests/fixtures.
    fn at(rel: &str) -> Folder {
        let dir = format!("{}/tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
        let read = |f: &str| std::fs::read(format!("{dir}/{f}")).ok();
        let folder = Folder {
            vocab: read("vocab.json"),
            merges: read("merges.txt"),
            vocab_txt: read("vocab.txt"),
            tokenizer: read("tokenizer.json"),
            config: read("tokenizer_config.json"),
            special: read("special_tokens_map.json"),
        };
        assert!(
            folder.tokenizer.is_some() || folder.vocab.is_some() || folder.vocab_txt.is_some(),
            "{dir}: no tokenizer files"
        );
        folder
    }
    fn files(&self) -> TokenizerFiles<'_> {
        TokenizerFiles {
            vocab_json: self.vocab.as_deref(),
            merges_txt: self.merges.as_deref(),
            vocab_txt: self.vocab_txt.as_deref(),
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

// ---------------------------------------------------------------------------------
// WordPiece (BERT): RadEdit's BioViL-T tokenizer

/// BioViL-T's order: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
const PAD: u32 = 0;
const UNK: u32 = 1;
const CLS: u32 = 2;
const SEP: u32 = 3;

/// The WordPiece fixture's layouts: vocab.txt with and without its tokenizer_config.json,
/// fast/tokenizer.json with and without its own.
fn wordpiece_layouts() -> Vec<(&'static str, PromptTokenizer)> {
    let txt = Folder::at("wordpiece");
    let fast = Folder::at("wordpiece/fast");
    assert!(txt.vocab_txt.is_some() && txt.tokenizer.is_none() && txt.vocab.is_none());
    assert!(fast.tokenizer.is_some() && fast.vocab_txt.is_none());
    let build = |files| PromptTokenizer::from_files(files).unwrap();
    vec![
        ("vocab.txt + tokenizer_config.json", build(txt.files())),
        (
            "vocab.txt alone",
            build(TokenizerFiles {
                vocab_txt: txt.vocab_txt.as_deref(),
                ..TokenizerFiles::default()
            }),
        ),
        (
            "fast/tokenizer.json + tokenizer_config.json",
            build(fast.files()),
        ),
        (
            "fast/tokenizer.json alone",
            build(TokenizerFiles {
                tokenizer_json: fast.tokenizer.as_deref(),
                ..TokenizerFiles::default()
            }),
        ),
    ]
}

fn wordpiece_cases(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/wordpiece/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The fixture's tokenizer_config.json with `extra` merged in.
fn wordpiece_config(extra: Value) -> Vec<u8> {
    let mut config: Value =
        serde_json::from_slice(&Folder::at("wordpiece").config.unwrap()).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    serde_json::to_vec(&config).unwrap()
}

#[test]
fn wordpiece_sentences_match_transformers() {
    let cases = wordpiece_cases("ids.json");
    assert_eq!(cases.len(), 134);
    for (layout, tok) in wordpiece_layouts() {
        assert_eq!(tok.kind(), TokenizerKind::WordPiece, "{layout}");
        assert_eq!(tok.max_length(), 128, "{layout}");
        let mut bad = Vec::new();
        let mut truncated = 0;
        for case in &cases {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["ids"]);
            let want_128 = ids(&case["input_ids"]);
            let want_decode = case["decode"].as_str().unwrap();
            let got = tok.encode_unpadded(text).unwrap();
            let e = tok.encode(text).unwrap();
            let decoded = tok.decode(&got, true).unwrap();
            if got != want || e.ids != want_128 || decoded != want_decode {
                bad.push(format!(
                    "{text:?}\n  want {want:?}\n  got  {got:?}\n  want_128 {want_128:?}\n  got_128  {:?}\n  want decode {want_decode:?}\n  got decode  {decoded:?}",
                    e.ids
                ));
                continue;
            }
            assert_eq!(e.tokens_used, want.len().min(128), "{text:?}");
            assert_eq!(e.dropped.is_some(), want.len() > 128, "{text:?}");
            truncated += e.dropped.is_some() as usize;
        }
        println!(
            "{layout}: {}/{} sentences match ({truncated} truncated)",
            cases.len() - bad.len(),
            cases.len()
        );
        assert!(
            bad.is_empty(),
            "{layout}: {} differ:\n{}",
            bad.len(),
            bad.join("\n")
        );
        assert_eq!(truncated, 6, "{layout}");
    }
}

#[test]
fn wordpiece_clean_up_tokenization_spaces() {
    // 4.x-era BERT configs set clean_up_tokenization_spaces; transformers 5 then cleans
    // the decoded text once more (" 's" → "'s", …).
    let f = Folder::at("wordpiece");
    let config = wordpiece_config(serde_json::json!({"clean_up_tokenization_spaces": true}));
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_config_json: Some(&config),
        ..f.files()
    })
    .unwrap();
    let mut changed = 0;
    for case in wordpiece_cases("ids.json") {
        let want = case["decode_clean"].as_str().unwrap();
        changed += (want != case["decode"].as_str().unwrap()) as usize;
        let got = tok.decode(&ids(&case["ids"]), true).unwrap();
        assert_eq!(got, want, "{:?}", case["text"]);
    }
    assert_eq!(changed, 3);
}

#[test]
fn wordpiece_options_match_transformers() {
    // do_lower_case, strip_accents, tokenize_chinese_chars as tokenizer_config.json sets them.
    let f = Folder::at("wordpiece");
    let sets = wordpiece_cases("ids_options.json");
    assert_eq!(sets.len(), 5);
    for set in sets {
        let config = wordpiece_config(set["options"].clone());
        let tok = PromptTokenizer::from_files(TokenizerFiles {
            tokenizer_config_json: Some(&config),
            ..f.files()
        })
        .unwrap();
        for case in set["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode_unpadded(text).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{} {text:?}", set["options"]);
            assert_eq!(
                tok.decode(&got, true).unwrap(),
                case["decode"].as_str().unwrap(),
                "{} {text:?}",
                set["options"]
            );
        }
    }
}

#[test]
fn wordpiece_special_ids_come_from_the_vocabulary() {
    for (layout, tok) in wordpiece_layouts() {
        assert!(tok.is_wordpiece(), "{layout}");
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id(), tok.pad_token()),
            (CLS, SEP, PAD, "[PAD]"),
            "{layout}"
        );
        assert_eq!(tok.inner().token_to_id("[UNK]"), Some(UNK), "{layout}");
        assert_eq!(tok.inner().token_to_id("[MASK]"), Some(4), "{layout}");
    }
    // bert-base's order instead: the specials after 100 other tokens.
    let txt = String::from_utf8(Folder::at("wordpiece").vocab_txt.unwrap()).unwrap();
    let (specials, rest): (Vec<&str>, Vec<&str>) = txt.lines().partition(|l| {
        l.len() > 2 && l.starts_with('[') && l.ends_with(']') && !l.starts_with("[unused")
    });
    assert_eq!(specials, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    let reordered: String = rest[..100]
        .iter()
        .chain(["[UNK]", "[SEP]", "[PAD]", "[MASK]", "[CLS]"].iter())
        .chain(&rest[100..])
        .map(|l| format!("{l}\n"))
        .collect();
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        vocab_txt: Some(reordered.as_bytes()),
        ..TokenizerFiles::default()
    })
    .unwrap();
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (104, 101, 102));
    let e = tok.encode("[MASK] small").unwrap();
    assert_eq!(
        e.ids[..4],
        [104, 103, tok.inner().token_to_id("small").unwrap(), 101]
    );
    assert!(e.ids[4..].iter().all(|&i| i == 102));

    // special_tokens_map.json names them too (it wins over tokenizer_config.json, as in
    // transformers when the config has no added_tokens_decoder).
    let f = Folder::at("wordpiece");
    let map = br#"{"cls_token": "[unused0]", "sep_token": "[unused1]"}"#;
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        special_tokens_map_json: Some(map),
        ..f.files()
    })
    .unwrap();
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (5, 6, PAD));
}

#[test]
fn wordpiece_truncation_keeps_sep_last() {
    let tok = PromptTokenizer::from_files(Folder::at("wordpiece").files()).unwrap();
    let no = tok.inner().token_to_id("no").unwrap();
    // [CLS], 125 × "no", then the long word's pieces: its first piece is the 127th id.
    let text = format!(
        "{}pneumonoultramicroscopicsilicovolcanoconiosis and more",
        "no ".repeat(125)
    );
    let full = tok.encode_unpadded(&text).unwrap();
    assert!(full.len() > 128);
    let e = tok.encode(&text).unwrap();
    assert_eq!(e.ids.len(), 128);
    assert_eq!((e.ids[0], e.ids[127]), (CLS, SEP));
    assert!(e.ids[1..126].iter().all(|&i| i == no));
    assert_eq!(e.ids[126], full[126]);
    assert_eq!(e.tokens_used, 128);
    assert_eq!(
        e.dropped.as_deref(),
        Some("pneumonoultramicroscopicsilicovolcanoconiosis and more")
    );
    // [CLS] + 126 + [SEP] = 128 fits; one more does not.
    let e = tok.encode(&"a ".repeat(126)).unwrap();
    assert_eq!((e.tokens_used, e.dropped, e.ids[127]), (128, None, SEP));
    let e = tok.encode(&"a ".repeat(127)).unwrap();
    assert_eq!(
        (e.tokens_used, e.dropped.as_deref(), e.ids[127]),
        (128, Some("a"), SEP)
    );

    // The recipe's own length: set_max_length.
    let mut tok = tok;
    tok.set_max_length(8);
    let e = tok
        .encode("Small left pleural effusion, unchanged since prior.")
        .unwrap();
    assert_eq!(e.ids.len(), 8);
    assert_eq!((e.ids[0], e.ids[7], e.tokens_used), (CLS, SEP, 8));
    assert_eq!(e.dropped.as_deref(), Some("since prior."));
    let e = tok.encode("Small").unwrap();
    assert_eq!(e.ids[3..], [PAD; 5]);
    tok.set_max_length(0);
    assert_eq!(tok.max_length(), 2);
    assert_eq!(tok.encode("Small left").unwrap().ids, [CLS, SEP]);
}

#[test]
fn wordpiece_missing_special_tokens_are_refused() {
    let f = Folder::at("wordpiece");
    let txt = String::from_utf8(f.vocab_txt.clone().unwrap()).unwrap();
    for (token, key) in [
        ("[CLS]", "cls_token"),
        ("[SEP]", "sep_token"),
        ("[PAD]", "pad_token"),
        ("[UNK]", "unk_token"),
        ("[MASK]", "mask_token"),
    ] {
        let without: String = txt
            .lines()
            .filter(|l| *l != token)
            .map(|l| format!("{l}\n"))
            .collect();
        let err = PromptTokenizer::from_files(TokenizerFiles {
            vocab_txt: Some(without.as_bytes()),
            ..f.files()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::Config { file, .. } if file == "tokenizer/vocab.txt"),
            "{msg}"
        );
        assert!(msg.contains(key) && msg.contains(token), "{msg}");
    }
    // A config naming a token the vocabulary lacks.
    let config = wordpiece_config(serde_json::json!({"cls_token": "<s>"}));
    let err = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_config_json: Some(&config),
        ..f.files()
    })
    .unwrap_err();
    assert!(err.to_string().contains("cls_token \"<s>\""), "{err}");
    // The same from tokenizer.json: its file is named.
    let fast = Folder::at("wordpiece/fast");
    let json = String::from_utf8(fast.tokenizer.clone().unwrap())
        .unwrap()
        .replace("\"[CLS]\": 2,", "");
    let err = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_json: Some(json.as_bytes()),
        ..TokenizerFiles::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::Config { file, .. } if file == "tokenizer/tokenizer.json"),
        "{err}"
    );
}

#[test]
fn wordpiece_or_clip_by_the_files() {
    let clip = Folder::read("tiny-sd");
    let wp = Folder::at("wordpiece");
    let fast = Folder::at("wordpiece/fast");
    // vocab.json + merges.txt beside a vocab.txt: CLIP.
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        vocab_txt: wp.vocab_txt.as_deref(),
        ..clip.files()
    })
    .unwrap();
    assert_eq!((tok.kind(), tok.max_length()), (TokenizerKind::ClipBpe, 77));
    assert!(!tok.is_wordpiece());
    // A vocab.json without merges.txt does not stop a vocab.txt.
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        vocab_json: clip.vocab.as_deref(),
        vocab_txt: wp.vocab_txt.as_deref(),
        ..TokenizerFiles::default()
    })
    .unwrap();
    assert_eq!(tok.kind(), TokenizerKind::WordPiece);
    // tokenizer.json decides by its model's type, whatever else is there.
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_json: fast.tokenizer.as_deref(),
        vocab_json: clip.vocab.as_deref(),
        merges_txt: clip.merges.as_deref(),
        ..TokenizerFiles::default()
    })
    .unwrap();
    assert_eq!(tok.kind(), TokenizerKind::WordPiece);
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_json: Folder::read("tiny-sd-bin").tokenizer.as_deref(),
        vocab_txt: wp.vocab_txt.as_deref(),
        ..TokenizerFiles::default()
    })
    .unwrap();
    assert_eq!(tok.kind(), TokenizerKind::ClipBpe);
    // model_max_length: a "no limit" value means BERT's 128 (CLIP keeps 77).
    let config = wordpiece_config(serde_json::json!({"model_max_length": 1e30}));
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_config_json: Some(&config),
        ..wp.files()
    })
    .unwrap();
    assert_eq!(tok.max_length(), 128);
    let config = wordpiece_config(serde_json::json!({"model_max_length": 512}));
    let tok = PromptTokenizer::from_files(TokenizerFiles {
        tokenizer_config_json: Some(&config),
        ..wp.files()
    })
    .unwrap();
    assert_eq!(tok.max_length(), 512);
    assert_eq!(tok.encode("Small").unwrap().ids.len(), 512);
}

#[test]
fn roentgen_tokenize_prints_wordpiece_ids() {
    // A diffusers folder whose tokenizer/ is BERT's (vocab.txt + tokenizer_config.json).
    let fix = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("roentgen-tokenize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    std::fs::copy(
        format!("{fix}/tiny-sd/model_index.json"),
        dir.join("model_index.json"),
    )
    .unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(
            format!("{fix}/wordpiece/{f}"),
            dir.join("tokenizer").join(f),
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_roentgen"))
            .arg("tokenize")
            .arg("--model")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        (ids, stderr)
    };
    let text = "Small right-sided pleural effusion.";
    let (ids, _) = run(&[text]);
    assert_eq!(ids, [CLS, 149, 159, 27, 162, 179, 180, 28, SEP]);
    let (padded, _) = run(&["--padded", text]);
    assert_eq!(
        (padded.len(), &padded[..9], padded[9]),
        (128, &ids[..], PAD)
    );
    let (long, warning) = run(&["--padded", &"no ".repeat(130)]);
    assert_eq!((long.len(), long[127]), (128, SEP));
    assert!(warning.contains("longer than 128 tokens"), "{warning}");
    std::fs::remove_dir_all(&dir).unwrap();
}
