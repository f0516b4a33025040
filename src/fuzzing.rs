//! Fuzz targets: bytes in, the real parser run on them, the result ignored.
//!
//! Each function here is one target of the coverage-guided fuzzer in `fuzz/` (cargo-afl,
//! see `scripts/fuzz.sh` and docs/RELIABILITY.md) and of the corpus replay in
//! `tests/fuzz_corpus.rs`. An `Err` is the parser doing its job; a panic, an abort, an
//! allocation sized by the input or a hang is a bug.
//!
//! Nothing here touches the GPU. Native only: the tokenizer target reads the test
//! fixtures' CLIP and WordPiece vocabularies from the source tree.
#![cfg(not(target_arch = "wasm32"))]

use std::sync::OnceLock;

use crate::batch::{self, PlanOptions, PromptTable};
use crate::models::config::{ClipTextConfig, UNetConfig, VaeConfig};
use crate::schedulers::{self, SchedulerConfig, SchedulerKind};
use crate::tokenizer::{PromptTokenizer, TokenizerFiles};
use crate::weights::{WeightIndex, pickle};

/// The byte that separates the files of one tokenizer-files input: 0xFF never occurs in
/// UTF-8 text, so no real JSON or merges file holds it.
pub const FILE_SEPARATOR: u8 = 0xFF;

/// A weight file chosen by content ([`WeightIndex::parse`]: safetensors unless it is a
/// zip), then every tensor's bytes located and, where it is a float, read as f32 with the
/// shape the header gives (what the loader does with each tensor).
pub fn safetensors(data: &[u8]) {
    if let Ok(index) = WeightIndex::parse("fuzz.safetensors", data) {
        read_every_tensor(&index, data);
    }
}

/// A torch `.bin`: an input starting with a zip signature is parsed as the whole
/// checkpoint (zip directory, `data.pkl`, storages) and its tensors read as in
/// [`safetensors`]; any other input is fed to the pickle reader on its own, as if it were
/// the archive's `data.pkl`.
pub fn torch_bin(data: &[u8]) {
    if data.starts_with(b"PK") {
        if let Ok(index) = WeightIndex::parse_pytorch("fuzz.bin", data) {
            read_every_tensor(&index, data);
        }
    } else {
        let _ = pickle::parse("fuzz.bin", "archive/data.pkl", data);
    }
}

fn read_every_tensor(index: &WeightIndex, data: &[u8]) {
    for (name, info) in &index.tensors {
        let _ = index.tensor_bytes(data, name);
        if info.dtype.is_float() {
            let _ = index.read_f32(data, name, &info.shape);
        }
    }
    let _ = index.get("no.such.tensor");
}

/// One JSON text read as each of the three model configs (UNet, VAE, CLIP text encoder),
/// and what the model builders ask of an accepted one (heads per block, scale factor).
pub fn model_config(data: &[u8]) {
    let json = String::from_utf8_lossy(data);
    if let Ok(c) = UNetConfig::from_json("unet/config.json", &json) {
        for i in 0..c.block_out_channels.len() {
            let _ = c.heads(i);
            let _ = c.attention_head_dim.get(i);
        }
    }
    if let Ok(c) = VaeConfig::from_json("vae/config.json", &json) {
        let _ = c.scale_factor();
    }
    let _ = ClipTextConfig::from_json("text_encoder/config.json", &json);
}

/// A `scheduler_config.json`; an accepted one builds each of the four schedulers for 1,
/// 2 and 50 steps and runs the 50-step ones through their whole loop on a 4-value sample.
pub fn scheduler_config(data: &[u8]) {
    let json = String::from_utf8_lossy(data);
    let Ok(config) = SchedulerConfig::from_json("scheduler/scheduler_config.json", &json) else {
        return;
    };
    for kind in SchedulerKind::ALL {
        let _ = schedulers::alphas_cumprod(kind, &config);
        for steps in [1, 2, 50] {
            let Ok(mut s) = schedulers::build(kind, &config, steps) else {
                continue;
            };
            if steps != 50 {
                continue;
            }
            let mut sample = vec![0.5f32, -1.0, 2.0, 0.0];
            let noise = [0.1f32, 0.2, -0.3, 0.4];
            let eps = [0.01f32, -0.02, 0.03, 0.0];
            sample.iter_mut().for_each(|x| *x *= s.init_noise_sigma());
            for i in 0..s.timesteps().len() {
                let mut input = sample.clone();
                s.scale_model_input(&mut input, i);
                let noise = s.needs_noise().then_some(&noise[..]);
                sample = s.step(&eps, i, &sample, noise);
            }
        }
    }
}

/// The tokenizer, two ways, chosen by the first byte:
/// - even: the rest is a prompt (lossy UTF-8) encoded with the test checkpoint's real CLIP
///   vocabulary (tests/fixtures/tiny-sd/tokenizer) and with the WordPiece fixture
///   (tests/fixtures/wordpiece), padded and unpadded, and decoded back;
/// - odd: the rest is a tokenizer folder, its files separated by [`FILE_SEPARATOR`] in
///   the order `tokenizer.json`, `vocab.json`, `merges.txt`, `tokenizer_config.json`,
///   `special_tokens_map.json`, `vocab.txt` (an empty part is an absent file; the last,
///   added with the WordPiece tokenizer, keeps older inputs' meaning); a tokenizer built
///   from them encodes and decodes a fixed prompt.
pub fn tokenizer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let prompt = String::from_utf8_lossy(rest);
        encode_prompt(fixture_tokenizer(), &prompt);
        encode_prompt(fixture_wordpiece(), &prompt);
    } else {
        let mut parts = rest.split(|&b| b == FILE_SEPARATOR);
        let mut next = || parts.next().filter(|p| !p.is_empty());
        let files = TokenizerFiles {
            tokenizer_json: next(),
            vocab_json: next(),
            merges_txt: next(),
            tokenizer_config_json: next(),
            special_tokens_map_json: next(),
            vocab_txt: next(),
        };
        if let Ok(t) = PromptTokenizer::from_files(files) {
            encode_prompt(
                &t,
                "a chest x-ray: small left pleural effusion!! <|endoftext|> [SEP] ##ing 胸部",
            );
        }
    }
}

fn encode_prompt(t: &PromptTokenizer, prompt: &str) {
    if let Ok(e) = t.encode(prompt) {
        let _ = t.decode(&e.ids, true);
        let _ = t.decode(&e.ids, false);
    }
    let _ = t.encode_unpadded(prompt);
}

/// The CLIP tokenizer of tests/fixtures/tiny-sd (the real SD 1.x vocabulary), built once.
pub fn fixture_tokenizer() -> &'static PromptTokenizer {
    static TOKENIZER: OnceLock<PromptTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny-sd/tokenizer/"
        );
        let read = |name: &str| {
            std::fs::read(format!("{dir}{name}"))
                .unwrap_or_else(|e| panic!("fuzzing needs {dir}{name}: {e}"))
        };
        let (vocab, merges) = (read("vocab.json"), read("merges.txt"));
        let (config, special) = (
            read("tokenizer_config.json"),
            read("special_tokens_map.json"),
        );
        PromptTokenizer::from_files(TokenizerFiles {
            vocab_json: Some(&vocab),
            merges_txt: Some(&merges),
            vocab_txt: None,
            tokenizer_json: None,
            tokenizer_config_json: Some(&config),
            special_tokens_map_json: Some(&special),
        })
        .expect("the fixture tokenizer builds")
    })
}

/// The WordPiece tokenizer of tests/fixtures/wordpiece (vocab.txt + tokenizer_config.json,
/// BioViL-T's special-token order), built once.
pub fn fixture_wordpiece() -> &'static PromptTokenizer {
    static TOKENIZER: OnceLock<PromptTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wordpiece/");
        let read = |name: &str| {
            std::fs::read(format!("{dir}{name}"))
                .unwrap_or_else(|e| panic!("fuzzing needs {dir}{name}: {e}"))
        };
        let (vocab, config) = (read("vocab.txt"), read("tokenizer_config.json"));
        PromptTokenizer::from_files(TokenizerFiles {
            vocab_txt: Some(&vocab),
            tokenizer_config_json: Some(&config),
            ..TokenizerFiles::default()
        })
        .expect("the WordPiece fixture tokenizer builds")
    })
}

/// A prompt table, as `roentgen batch` reads it: the first byte chooses the format (even:
/// `prompts.csv`, odd: `prompts.jsonl`), the rest is the file; an accepted table is
/// planned into jobs (ids, seeds, prompts) for 3 images a row.
pub fn prompt_table(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let name = if mode % 2 == 0 {
        "prompts.csv"
    } else {
        "prompts.jsonl"
    };
    if let Ok(table) = PromptTable::parse(name, rest) {
        let _ = table.label_columns();
        let _ = batch::plan(
            &table,
            &PlanOptions {
                images_per_prompt: 3,
                seed: 7,
                template: None,
                extension: "png",
            },
        );
    }
}

/// An init image or a mask, as `roentgen generate --init-image/--mask` and the page read
/// them (`crate::image_in`: PNG, JPEG or DICOM, told by the bytes): the first byte
/// chooses (even: the init image, odd: the mask), the rest is the file.
pub fn image_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(image) = crate::image_in::decode_image("fuzz.img", rest) {
            assert_eq!(image.rgb.len(), image.width * image.height * 3);
        }
    } else if let Ok(mask) = crate::image_in::decode_mask("fuzz.img", rest) {
        assert_eq!(mask.repaint.len(), mask.width * mask.height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WordPiece seeds build a tokenizer (so the fuzzer starts inside the WordPiece
    /// path, not at its first error).
    #[test]
    fn wordpiece_seeds_build() {
        for (name, kind) in [
            ("files_vocab_txt.bin", "vocab.txt"),
            ("files_wordpiece_json.bin", "tokenizer.json"),
        ] {
            let path = format!("{}/fuzz/seeds/tokenizer/{name}", env!("CARGO_MANIFEST_DIR"));
            let data = std::fs::read(&path).unwrap();
            let mut parts = data[1..].split(|&b| b == FILE_SEPARATOR);
            let mut next = || parts.next().filter(|p| !p.is_empty());
            let files = TokenizerFiles {
                tokenizer_json: next(),
                vocab_json: next(),
                merges_txt: next(),
                tokenizer_config_json: next(),
                special_tokens_map_json: next(),
                vocab_txt: next(),
            };
            let t = PromptTokenizer::from_files(files).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(t.is_wordpiece(), "{name} ({kind})");
            let e = t
                .encode("a chest x-ray: small left pleural effusion!!")
                .unwrap();
            assert_eq!((e.ids[0], e.ids.len()), (2, t.max_length()), "{name}");
        }
        assert_eq!(fixture_wordpiece().bos_id(), 2);
        tokenizer(b"\x00Caf\xc3\xa9 [CLS] ##ing");
    }
}
