//! The prompt tokenizers of the text encoders, exactly as transformers (5.x) builds them from
//! a checkpoint's own `tokenizer/` folder: CLIP's BPE (Stable Diffusion, RoentGen) and BERT's
//! WordPiece (RadEdit's CXR-BERT, microsoft/BiomedVLP-BioViL-T). [`PromptTokenizer::kind`]
//! says which a folder held.
//!
//! # CLIP (`CLIPTokenizer`, what `StableDiffusionPipeline` uses)
//!
//! Two folder layouts occur:
//! - RoentGen-era (transformers 4.x): `vocab.json` + `merges.txt`, with
//!   `tokenizer_config.json` and `special_tokens_map.json`;
//! - newer (transformers 5.x `save_pretrained`): `tokenizer.json` (+ `tokenizer_config.json`).
//!
//! transformers 5 builds the same backend in both cases: `CLIPTokenizer.__init__` takes only
//! the vocabulary and the merges (from `tokenizer.json` too) and rebuilds the rest itself:
//! - normalizer: NFC, then every run of whitespace (`\s+`) → one space, then lower-casing
//!   (no ftfy and no BERT-style clean-up in transformers 5, even when ftfy is installed);
//! - pre-tokenizer: the CLIP regex
//!   `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!   (matches kept, the rest dropped), then GPT-2 byte-level (with its own regex);
//! - model: BPE with the `</w>` end-of-word suffix, unknown token `<|endoftext|>`;
//! - post-processor: `<|startoftext|> … <|endoftext|>` (RoBERTa-style);
//! - added tokens: the special tokens named in the configs (bos, eos, unk, pad, …), which are
//!   then matched as whole tokens inside the prompt. With SD 2.x's `pad_token` `!`, every `!`
//!   in a prompt becomes id 0, as in transformers.
//!
//! # BERT WordPiece (`BertTokenizer`, what RadEdit uses, with `model_max_length=128`)
//!
//! Built from `vocab.txt` (one token a line, the line number is the id) or from a
//! `tokenizer.json` whose model is `WordPiece` (its vocabulary only), each with
//! `tokenizer_config.json` / `special_tokens_map.json` where present. As `BertTokenizer.__init__`:
//! - normalizer: BERT's (control characters dropped, whitespace → space, a space around
//!   every CJK ideograph, then `do_lower_case` (default true) lower-casing and accents
//!   stripped per `strip_accents`, which follows `do_lower_case` when absent or null;
//!   `tokenize_chinese_chars` default true);
//! - pre-tokenizer: BERT's (split on whitespace, every punctuation character alone);
//! - model: WordPiece, `##` continuations, the unknown token (`[UNK]`) for a word that does
//!   not split into pieces or is longer than 100 characters;
//! - post-processor: `[CLS] … [SEP]`; decoder: `##` pieces joined.
//!
//! The special tokens (`cls_token`, `sep_token`, `pad_token`, `unk_token`, `mask_token`,
//! defaults `[CLS]` `[SEP]` `[PAD]` `[UNK]` `[MASK]`) take their ids from the vocabulary:
//! BioViL-T's is `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4, bert-base's
//! 0/100/101/102/103. One missing from the vocabulary is refused (transformers would append
//! it with a new id, which the text encoder has no embedding for). `bos_id()` is `[CLS]`,
//! `eos_id()` `[SEP]`.
//!
//! [`PromptTokenizer::encode`] pads and truncates to `model_max_length` (CLIP 77, BERT 128
//! unless the config says otherwise) as `tokenizer(text, padding="max_length",
//! max_length=L, truncation=True)` does.
//!
//! Bytes in, values out: no filesystem, no threads (builds for wasm32).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{
    BertNormalizer, Lowercase, NFC, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// The CLIP pre-tokenizer pattern (transformers' `CLIPTokenizer` / `CLIPConverter`).
pub const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// CLIP's text context: 77 positions.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// The WordPiece (BERT) context when `tokenizer_config.json` names none: RadEdit's recipe
/// runs its CXR-BERT with `model_max_length=128`.
pub const WORDPIECE_MAX_LENGTH: usize = 128;

const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";

/// `CLIPTokenizer`'s defaults for the special tokens it names.
const CLIP_DEFAULTS: &[(&str, &str)] = &[
    ("bos_token", DEFAULT_BOS),
    ("eos_token", DEFAULT_EOS),
    ("unk_token", DEFAULT_EOS),
    ("pad_token", DEFAULT_EOS),
];

/// `BertTokenizer`'s defaults for the special tokens it names.
const BERT_DEFAULTS: &[(&str, &str)] = &[
    ("unk_token", "[UNK]"),
    ("sep_token", "[SEP]"),
    ("pad_token", "[PAD]"),
    ("cls_token", "[CLS]"),
    ("mask_token", "[MASK]"),
];

/// The kind of tokenizer a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// transformers' `CLIPTokenizer`: byte-level BPE, `</w>` ends a word (Stable Diffusion,
    /// RoentGen).
    ClipBpe,
    /// transformers' `BertTokenizer`: WordPiece, `##` continues a word (RadEdit's CXR-BERT).
    WordPiece,
}

/// The raw files of a checkpoint's `tokenizer/` folder (whichever are present).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenizerFiles<'a> {
    pub vocab_json: Option<&'a [u8]>,
    pub merges_txt: Option<&'a [u8]>,
    /// BERT's WordPiece vocabulary: one token a line, the line's number is its id.
    pub vocab_txt: Option<&'a [u8]>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub tokenizer_config_json: Option<&'a [u8]>,
    pub special_tokens_map_json: Option<&'a [u8]>,
}

/// A prompt as the text encoder takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_length` ids: BOS (CLS), the prompt's tokens, EOS (SEP), then pad ids.
    pub ids: Vec<u32>,
    /// Ids before padding, BOS and EOS included, at most `max_length`.
    pub tokens_used: usize,
    /// The end of the prompt that did not fit (as typed, from the first word truncation cut
    /// into), for telling the user; `None` when everything fit.
    pub dropped: Option<String>,
}

/// transformers' `CLIPTokenizer` or `BertTokenizer`, on the `tokenizers` crate.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    kind: TokenizerKind,
    /// `clean_up_tokenization_spaces` (WordPiece only: transformers skips it for BPE).
    clean_up_spaces: bool,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    pad_token: String,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("kind", &self.kind)
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_token", &self.pad_token)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

/// An added token as transformers holds it (`tokenizers.AddedToken`): compared on all fields.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tok {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

impl Tok {
    /// `AddedToken(**obj)`: `normalized` defaults to `not special`.
    fn from_object(obj: &Map<String, Value>, special_default: bool) -> Option<Tok> {
        let content = obj.get("content")?.as_str()?.to_string();
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool);
        let special = flag("special").unwrap_or(special_default);
        Some(Tok {
            content,
            single_word: flag("single_word").unwrap_or(false),
            lstrip: flag("lstrip").unwrap_or(false),
            rstrip: flag("rstrip").unwrap_or(false),
            normalized: flag("normalized").unwrap_or(!special),
            special,
        })
    }

    /// `AddedToken(s, special=True)`.
    fn special_str(s: &str) -> Tok {
        Tok {
            content: s.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }

    fn to_added(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized)
    }
}

/// A special-token value in the configs: a plain string or an `AddedToken`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SpecialValue {
    Str(String),
    Tok(Tok),
}

impl SpecialValue {
    fn content(&self) -> &str {
        match self {
            SpecialValue::Str(s) => s,
            SpecialValue::Tok(t) => &t.content,
        }
    }
}

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order (the order tokens are added).
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

fn parse_json(file: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Config {
        file: file.into(),
        message: format!("not valid JSON: {e}"),
    })
}

fn parse_object(file: &str, bytes: &[u8]) -> Result<Map<String, Value>> {
    match parse_json(file, bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(Error::Config {
            file: file.into(),
            message: "expected a JSON object".into(),
        }),
    }
}

fn config_err(file: &str, message: impl Into<String>) -> Error {
    Error::Config {
        file: file.into(),
        message: message.into(),
    }
}

/// `vocab.json`: token → id (non-numeric entries skipped, as `tokenizers` does).
fn parse_vocab_map(file: &str, obj: &Map<String, Value>) -> Result<HashMap<String, u32>> {
    let mut vocab = HashMap::with_capacity(obj.len());
    for (token, id) in obj {
        if let Value::Number(n) = id {
            let id = n
                .as_u64()
                .filter(|&i| i <= u32::MAX as u64)
                .ok_or_else(|| config_err(file, format!("bad id {n} for token {token:?}")))?;
            vocab.insert(token.clone(), id as u32);
        }
    }
    Ok(vocab)
}

/// `merges.txt`: `#version` lines skipped, then one `a b` pair a line (`tokenizers`' reader).
fn parse_merges_txt(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    const FILE: &str = "tokenizer/merges.txt";
    let text = std::str::from_utf8(bytes).map_err(|_| config_err(FILE, "not UTF-8 text"))?;
    let mut merges = Vec::new();
    for (rank, line) in text
        .lines()
        .filter(|l| !l.starts_with("#version"))
        .enumerate()
    {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(config_err(
                    FILE,
                    format!(
                        "merge {} ({line:?}) is not two tokens separated by one space",
                        rank + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

/// What a `tokenizer.json` contributes under transformers 5's `CLIPTokenizer` and
/// `BertTokenizer`: its vocabulary (and BPE merges) and added tokens (normalizer,
/// pre-tokenizer and post-processor are rebuilt, not read).
struct TokenizerJson {
    model: JsonModel,
    added_tokens: Vec<(u32, Tok)>,
}

enum JsonModel {
    Bpe {
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
    },
    WordPiece {
        vocab: HashMap<String, u32>,
    },
}

fn parse_tokenizer_json(bytes: &[u8]) -> Result<TokenizerJson> {
    const FILE: &str = "tokenizer/tokenizer.json";
    let root = parse_object(FILE, bytes)?;
    let model = root
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| config_err(FILE, "no `model` object"))?;
    let wordpiece = match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => false,
        Some("WordPiece") => true,
        Some(other) => {
            return Err(Error::Input(format!(
                "{FILE}: a `{other}` tokenizer model; the text encoders need CLIP's BPE or BERT's WordPiece tokenizer"
            )));
        }
    };
    let vocab = match model.get("vocab") {
        Some(Value::Object(m)) => parse_vocab_map(FILE, m)?,
        Some(Value::Array(items)) => {
            // transformers: a list vocabulary gives token i the id i.
            let mut v = HashMap::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let token = match item {
                    Value::String(s) => s.as_str(),
                    Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or_default(),
                    _ => {
                        return Err(config_err(
                            FILE,
                            format!("vocabulary entry {i} is not a token"),
                        ));
                    }
                };
                v.insert(token.to_string(), i as u32);
            }
            v
        }
        _ => {
            return Err(config_err(
                FILE,
                format!(
                    "the {} model has no `vocab`",
                    if wordpiece { "WordPiece" } else { "BPE" }
                ),
            ));
        }
    };
    let added_tokens = parse_added_tokens(FILE, &root)?;
    if wordpiece {
        return Ok(TokenizerJson {
            model: JsonModel::WordPiece { vocab },
            added_tokens,
        });
    }
    let merges = match model.get("merges") {
        Some(Value::Array(items)) => {
            let mut merges = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let pair = match item {
                    Value::String(s) => {
                        let mut p = s.split(' ');
                        match (p.next(), p.next(), p.next()) {
                            (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
                            _ => None,
                        }
                    }
                    Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                        (Some(x), Some(y)) => Some((x.to_string(), y.to_string())),
                        _ => None,
                    },
                    _ => None,
                };
                merges.push(pair.ok_or_else(|| {
                    config_err(FILE, format!("merge {i} is not a pair of tokens: {item}"))
                })?);
            }
            merges
        }
        _ => return Err(config_err(FILE, "the BPE model has no `merges`")),
    };
    Ok(TokenizerJson {
        model: JsonModel::Bpe { vocab, merges },
        added_tokens,
    })
}

/// `tokenizer.json`'s `added_tokens`: `(id, token)`.
fn parse_added_tokens(file: &str, root: &Map<String, Value>) -> Result<Vec<(u32, Tok)>> {
    let mut added_tokens = Vec::new();
    if let Some(Value::Array(items)) = root.get("added_tokens") {
        for item in items {
            let obj = item
                .as_object()
                .ok_or_else(|| config_err(file, format!("bad added token {item}")))?;
            let id = obj
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| config_err(file, format!("added token without id: {item}")))?;
            let tok = Tok::from_object(obj, false)
                .ok_or_else(|| config_err(file, format!("added token without content: {item}")))?;
            added_tokens.push((id as u32, tok));
        }
    }
    Ok(added_tokens)
}

/// A special token in `tokenizer_config.json`: a string, or `{"__type": "AddedToken", …}`
/// (`AddedToken(**obj)`: not special unless it says so).
fn config_special(v: &Value) -> Option<SpecialValue> {
    match v {
        Value::String(s) => Some(SpecialValue::Str(s.clone())),
        Value::Object(o) => Tok::from_object(o, false).map(SpecialValue::Tok),
        _ => None,
    }
}

/// A special token in `special_tokens_map.json`: a string, or an object made
/// `AddedToken(**obj, special=True)`.
fn map_special(v: &Value) -> Option<SpecialValue> {
    match v {
        Value::String(s) => Some(SpecialValue::Str(s.clone())),
        Value::Object(o) => {
            let mut o = o.clone();
            o.remove("special");
            o.insert("special".into(), Value::Bool(true));
            Tok::from_object(&o, true).map(SpecialValue::Tok)
        }
        _ => None,
    }
}

fn special_list(v: &Value, from_map: bool) -> Vec<SpecialValue> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| {
                if from_map {
                    map_special(i)
                } else {
                    config_special(i)
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The added tokens transformers 5 gives the backend, in its order (see
/// `PreTrainedTokenizerBase._from_pretrained` and `TokenizersBackend.__init__`), and the
/// named special tokens' contents.
struct SpecialTokens {
    to_add: Vec<Tok>,
    named: HashMap<&'static str, String>,
}

/// `defaults`: the tokenizer class's defaults for the tokens it names ([`CLIP_DEFAULTS`],
/// [`BERT_DEFAULTS`]).
fn special_tokens(
    config: Option<&Map<String, Value>>,
    special_map: Option<&Map<String, Value>>,
    json_added: &[(u32, Tok)],
    defaults: &[(&str, &str)],
) -> Result<SpecialTokens> {
    // Named special tokens: tokenizer_config.json first.
    let mut named: Vec<(&'static str, Option<SpecialValue>)> = SPECIAL_KEYS
        .iter()
        .map(|&k| (k, config.and_then(|c| c.get(k)).and_then(config_special)))
        .collect();
    let mut extra: Vec<SpecialValue> = config
        .and_then(|c| {
            c.get("extra_special_tokens")
                .or_else(|| c.get("additional_special_tokens"))
        })
        .map(|v| special_list(v, false))
        .unwrap_or_default();

    // The added tokens' declarations: `added_tokens_decoder` in the config (then
    // special_tokens_map.json is not read), else special_tokens_map.json overrides the
    // config and tokenizer.json's `added_tokens` are the declarations.
    let mut decoder: Vec<(u32, Tok)> = Vec::new();
    if let Some(dec) = config.and_then(|c| c.get("added_tokens_decoder")) {
        let dec = dec.as_object().ok_or_else(|| {
            config_err(
                "tokenizer/tokenizer_config.json",
                "`added_tokens_decoder` is not an object",
            )
        })?;
        for (id, tok) in dec {
            let id: u32 = id.parse().map_err(|_| {
                config_err(
                    "tokenizer/tokenizer_config.json",
                    format!("`added_tokens_decoder` key {id:?} is not a token id"),
                )
            })?;
            let tok = tok
                .as_object()
                .and_then(|o| Tok::from_object(o, false))
                .ok_or_else(|| {
                    config_err(
                        "tokenizer/tokenizer_config.json",
                        format!("`added_tokens_decoder` entry {id} is not a token"),
                    )
                })?;
            decoder.push((id, tok));
        }
    } else {
        if let Some(map) = special_map {
            for (key, value) in named.iter_mut() {
                if let Some(v) = map.get(*key) {
                    *value = map_special(v);
                }
            }
            if let Some(v) = map
                .get("extra_special_tokens")
                .or_else(|| map.get("additional_special_tokens"))
            {
                for t in special_list(v, true) {
                    if !extra.contains(&t) {
                        extra.push(t);
                    }
                }
            }
        }
        decoder.extend(json_added.iter().cloned());
    }
    decoder.sort_by_key(|(id, _)| *id);
    // Python dict semantics: a later declaration of the same id replaces an earlier one.
    decoder.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = later.1.clone();
            true
        } else {
            false
        }
    });

    // Named tokens declared as added tokens take the declaration's flags.
    if !decoder.is_empty() {
        for v in named.iter_mut().filter_map(|(_, v)| v.as_mut()) {
            if let Some((_, t)) = decoder.iter().rev().find(|(_, t)| t.content == v.content()) {
                *v = SpecialValue::Tok(t.clone());
            }
        }
    }

    // The tokenizer class's defaults for the ones it names.
    for (key, value) in named.iter_mut() {
        if value.is_none() {
            *value = defaults
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| SpecialValue::Str(v.to_string()));
        }
    }

    // TokenizersBackend.__init__: the declarations, then each named (then extra) special
    // token whose content none of them declares, unless an equal one is already queued.
    let mut queue: Vec<SpecialValue> = decoder
        .iter()
        .map(|(_, t)| SpecialValue::Tok(t.clone()))
        .collect();
    let declared: Vec<String> = decoder.iter().map(|(_, t)| t.content.clone()).collect();
    for v in named.iter().filter_map(|(_, v)| v.clone()).chain(extra) {
        if !declared.iter().any(|c| c == v.content()) && !queue.contains(&v) {
            queue.push(v);
        }
    }
    let named_contents: Vec<&str> = named
        .iter()
        .filter_map(|(_, v)| v.as_ref().map(SpecialValue::content))
        .collect();
    let to_add = queue
        .into_iter()
        .map(|v| match v {
            SpecialValue::Str(s) => Tok::special_str(&s),
            SpecialValue::Tok(mut t) => {
                if !t.special && named_contents.contains(&t.content.as_str()) {
                    t.special = true;
                }
                t
            }
        })
        .collect();
    let named = named
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v.content().to_string())))
        .collect();
    Ok(SpecialTokens { to_add, named })
}

fn tokenizer_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config {
        file: "tokenizer/".into(),
        message: format!("{what}: {e}"),
    }
}

/// `tokenizer_config.json`'s `model_max_length`, or `default` where it names none or a
/// "no limit" value.
fn config_max_length(config: Option<&Map<String, Value>>, default: usize) -> Result<usize> {
    match config.and_then(|c| c.get("model_max_length")) {
        None | Some(Value::Null) => Ok(default),
        // transformers writes 1e30-ish "no limit" values.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(l) if (3..=65_536).contains(&l) => Ok(l as usize),
            Some(l) if l < 3 => Err(config_err(
                CONFIG_FILE,
                format!("model_max_length {l} leaves no room for a prompt"),
            )),
            _ => Ok(default),
        },
        Some(other) => Err(config_err(
            CONFIG_FILE,
            format!("model_max_length is not a number: {other}"),
        )),
    }
}

/// A `true`/`false`/`null` option of `tokenizer_config.json` (`None`: absent or null).
fn config_bool(config: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>> {
    match config.and_then(|c| c.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(config_err(
            CONFIG_FILE,
            format!("`{key}` is not true, false or null: {other}"),
        )),
    }
}

/// `vocab.txt` as the `tokenizers` crate reads it (`WordPiece::read_bytes`, which
/// transformers 5's `BertTokenizer` reaches through `WordPiece(vocab_file)`): one token a
/// line, trailing whitespace dropped, a token listed twice taking its later line's id.
fn parse_vocab_txt(bytes: &[u8]) -> Result<Vocab> {
    const FILE: &str = "tokenizer/vocab.txt";
    std::str::from_utf8(bytes).map_err(|e| config_err(FILE, format!("not UTF-8 text: {e}")))?;
    WordPiece::read_bytes(bytes).map_err(|e| config_err(FILE, e.to_string()))
}

const CONFIG_FILE: &str = "tokenizer/tokenizer_config.json";

/// The vocabulary a folder holds, before the tokenizer around it is built.
enum Vocabulary {
    Clip {
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        json_added: Vec<(u32, Tok)>,
    },
    WordPiece {
        vocab: Vocab,
        /// The file it came from, for errors.
        file: &'static str,
        json_added: Vec<(u32, Tok)>,
    },
}

impl PromptTokenizer {
    /// Builds the tokenizer from a checkpoint's `tokenizer/` files. `tokenizer.json` is
    /// preferred when present (as transformers does), CLIP's BPE or BERT's WordPiece as its
    /// model says; otherwise `vocab.json` + `merges.txt` (CLIP), otherwise `vocab.txt`
    /// (BERT).
    pub fn from_files(f: TokenizerFiles) -> Result<Self> {
        let config = f
            .tokenizer_config_json
            .map(|b| parse_object(CONFIG_FILE, b))
            .transpose()?;
        let special_map = f
            .special_tokens_map_json
            .map(|b| parse_object("tokenizer/special_tokens_map.json", b))
            .transpose()?;

        let vocabulary = match (f.tokenizer_json, f.vocab_json, f.merges_txt, f.vocab_txt) {
            (Some(tj), ..) => {
                let t = parse_tokenizer_json(tj)?;
                match t.model {
                    JsonModel::Bpe { vocab, merges } => Vocabulary::Clip {
                        vocab,
                        merges,
                        json_added: t.added_tokens,
                    },
                    JsonModel::WordPiece { vocab } => Vocabulary::WordPiece {
                        vocab: vocab.into_iter().collect(),
                        file: "tokenizer/tokenizer.json",
                        json_added: t.added_tokens,
                    },
                }
            }
            (None, Some(v), Some(m), _) => Vocabulary::Clip {
                vocab: parse_vocab_map(
                    "tokenizer/vocab.json",
                    &parse_object("tokenizer/vocab.json", v)?,
                )?,
                merges: parse_merges_txt(m)?,
                json_added: Vec::new(),
            },
            (None, _, _, Some(txt)) => Vocabulary::WordPiece {
                vocab: parse_vocab_txt(txt)?,
                file: "tokenizer/vocab.txt",
                json_added: Vec::new(),
            },
            (None, Some(_), None, None) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/merges.txt".into(),
                    hint: "tokenizer/vocab.json is there but its merges.txt is not; the CLIP BPE tokenizer needs both (or a tokenizer/tokenizer.json)".into(),
                });
            }
            (None, None, Some(_), None) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/vocab.json".into(),
                    hint: "tokenizer/merges.txt is there but its vocab.json is not; the CLIP BPE tokenizer needs both (or a tokenizer/tokenizer.json)".into(),
                });
            }
            (None, None, None, None) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/tokenizer.json".into(),
                    hint: "nor tokenizer/vocab.json + tokenizer/merges.txt (CLIP) nor tokenizer/vocab.txt (BERT): the tokenizer needs one of them (copy the checkpoint's whole tokenizer/ folder)".into(),
                });
            }
        };
        let (config, special_map) = (config.as_ref(), special_map.as_ref());
        match vocabulary {
            Vocabulary::Clip {
                vocab,
                merges,
                json_added,
            } => Self::clip(vocab, merges, &json_added, config, special_map),
            Vocabulary::WordPiece {
                vocab,
                file,
                json_added,
            } => Self::wordpiece(vocab, file, &json_added, config, special_map),
        }
    }

    /// transformers' `CLIPTokenizer` (see the module's docs).
    fn clip(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        json_added: &[(u32, Tok)],
        config: Option<&Map<String, Value>>,
        special_map: Option<&Map<String, Value>>,
    ) -> Result<Self> {
        // CLIP has 77 positions.
        let max_length = config_max_length(config, DEFAULT_MAX_LENGTH)?;
        let specials = special_tokens(config, special_map, json_added, CLIP_DEFAULTS)?;
        let unk = specials
            .named
            .get("unk_token")
            .cloned()
            .unwrap_or(DEFAULT_EOS.into());

        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .unk_token(unk)
            .build()
            .map_err(|e| tokenizer_err("vocabulary and merges do not form a BPE model", e))?;

        let mut tokenizer = Tokenizer::new(bpe);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| tokenizer_err("normalizer", e))?
                .into(),
            Lowercase.into(),
        ]);
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(|e| tokenizer_err("normalizer", e))?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| tokenizer_err("pre-tokenizer", e))?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        tokenizer
            .add_tokens(specials.to_add.iter().map(Tok::to_added))
            .map_err(|e| tokenizer_err("special tokens", e))?;

        let id_of = |key: &str| -> Result<(String, u32)> {
            let content = specials.named.get(key).cloned().unwrap_or_default();
            let id = tokenizer.token_to_id(&content).ok_or_else(|| {
                config_err(
                    CONFIG_FILE,
                    format!("{key} {content:?} is not in the vocabulary"),
                )
            })?;
            Ok((content, id))
        };
        let (bos, bos_id) = id_of("bos_token")?;
        let (eos, eos_id) = id_of("eos_token")?;
        let (pad_token, pad_id) = id_of("pad_token")?;
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos, eos_id), (bos, bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));

        Ok(PromptTokenizer {
            tokenizer,
            kind: TokenizerKind::ClipBpe,
            clean_up_spaces: false,
            max_length,
            bos_id,
            eos_id,
            pad_id,
            pad_token,
        })
    }

    /// transformers' `BertTokenizer` (see the module's docs).
    fn wordpiece(
        vocab: Vocab,
        vocab_file: &'static str,
        json_added: &[(u32, Tok)],
        config: Option<&Map<String, Value>>,
        special_map: Option<&Map<String, Value>>,
    ) -> Result<Self> {
        let max_length = config_max_length(config, WORDPIECE_MAX_LENGTH)?;
        let lowercase = config_bool(config, "do_lower_case")?.unwrap_or(true);
        let chinese = config_bool(config, "tokenize_chinese_chars")?.unwrap_or(true);
        // None: strip accents where lower-casing (BERT's original behaviour).
        let strip_accents = config_bool(config, "strip_accents")?;
        let clean_up_spaces = config_bool(config, "clean_up_tokenization_spaces")?.unwrap_or(false);
        let specials = special_tokens(config, special_map, json_added, BERT_DEFAULTS)?;

        // The special tokens take their ids from the vocabulary (BioViL-T's [PAD] [UNK]
        // [CLS] [SEP] [MASK] are 0..=4, bert-base's 0, 100..=103). transformers would give one
        // missing there a new id past the end, which no BERT text encoder has an embedding for.
        let not_in_vocab = |what: &str, content: &str| {
            config_err(
                vocab_file,
                format!(
                    "the {what} {content:?} is not in the vocabulary ({} tokens); a BERT tokenizer needs its special tokens there (named in tokenizer_config.json or special_tokens_map.json, else BERT's [CLS] [SEP] [PAD] [UNK] [MASK])",
                    vocab.len()
                ),
            )
        };
        for key in SPECIAL_KEYS {
            if let Some(content) = specials.named.get(key) {
                if !vocab.contains_key(content) {
                    return Err(not_in_vocab(key, content));
                }
            }
        }
        if let Some(t) = specials
            .to_add
            .iter()
            .find(|t| !vocab.contains_key(&t.content))
        {
            return Err(not_in_vocab("added token", &t.content));
        }
        let named = |key: &str| -> (String, u32) {
            // present (BERT_DEFAULTS names it) and in the vocabulary (checked above)
            let content = specials.named.get(key).cloned().unwrap_or_default();
            let id = vocab.get(&content).copied().unwrap_or_default();
            (content, id)
        };
        let (cls, cls_id) = named("cls_token");
        let (sep, sep_id) = named("sep_token");
        let (pad_token, pad_id) = named("pad_token");
        let (unk, _) = named("unk_token");

        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token(unk)
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| tokenizer_err("the vocabulary does not form a WordPiece model", e))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(
                true,
                chinese,
                strip_accents,
                lowercase,
            )))
            .map_err(|e| tokenizer_err("normalizer", e))?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        // transformers' `decoders.WordPiece(prefix="##")`: its own clean-up on.
        tokenizer.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::new(
            "##".into(),
            true,
        )));
        tokenizer
            .add_tokens(specials.to_add.iter().map(Tok::to_added))
            .map_err(|e| tokenizer_err("special tokens", e))?;
        tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));

        Ok(PromptTokenizer {
            tokenizer,
            kind: TokenizerKind::WordPiece,
            clean_up_spaces,
            max_length,
            bos_id: cls_id,
            eos_id: sep_id,
            pad_id,
            pad_token,
        })
    }

    /// CLIP's BPE or BERT's WordPiece.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// `kind() == TokenizerKind::WordPiece`: a BERT tokenizer (`[CLS] … [SEP]`, `##` pieces).
    pub fn is_wordpiece(&self) -> bool {
        self.kind == TokenizerKind::WordPiece
    }

    /// The text encoder's context length: `model_max_length` (CLIP 77; BERT 128 unless
    /// `tokenizer_config.json` says otherwise), or what [`Self::set_max_length`] set.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Pads and truncates to `n` ids from now on (`tokenizer(..., max_length=n)`): a recipe
    /// that knows its text encoder's context (RadEdit runs BioViL-T at 128, whatever its
    /// `tokenizer_config.json` says). At least 2, BOS and EOS: a smaller `n` counts as 2.
    pub fn set_max_length(&mut self, n: usize) {
        self.max_length = n.max(2);
    }

    /// The id every sequence starts with: CLIP's `<|startoftext|>` (49406), BERT's `[CLS]`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id every sequence ends with: CLIP's `<|endoftext|>` (49407), BERT's `[SEP]`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id: `<|endoftext|>` (49407) for SD 1.x, `!` (0) for SD 2.x, `[PAD]` for
    /// BERT (0 in BioViL-T's vocabulary).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| Error::Input(format!("the tokenizer failed on the prompt: {e}")))
    }

    /// BOS, the prompt's tokens, EOS: no truncation, no padding (`tokenizer(text).input_ids`).
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encoding(text)?.get_ids().to_vec())
    }

    /// `tokenizer(text, padding="max_length", max_length=L, truncation=True).input_ids`
    /// (L = [`Self::max_length`]), with how many tokens were used and what truncation cut off.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let enc = self.encoding(text)?;
        let all = enc.get_ids();
        let max = self.max_length;
        let (mut ids, dropped) = if all.len() <= max {
            (all.to_vec(), None)
        } else {
            // Keep BOS and the first max-2 tokens, then EOS.
            let mut ids = all[..max - 1].to_vec();
            ids.push(self.eos_id);
            (ids, Some(dropped_text(text, &enc, max - 1)))
        };
        let tokens_used = ids.len();
        ids.resize(max, self.pad_id);
        Ok(Encoded {
            ids,
            tokens_used,
            dropped,
        })
    }

    /// Token ids back to text, as transformers' `decode`: CLIP's `</w>` → space; BERT's `##`
    /// pieces joined to the piece before, the other tokens separated by spaces, then
    /// `clean_up_tokenization_spaces` where `tokenizer_config.json` asks for it.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Input(format!("the tokenizer could not decode ids: {e}")))?;
        Ok(match self.kind {
            TokenizerKind::ClipBpe => text.replace("</w>", " ").trim().to_string(),
            TokenizerKind::WordPiece if self.clean_up_spaces => clean_up_tokenization(&text),
            TokenizerKind::WordPiece => text,
        })
    }
}

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization` (5.24: the `tokenizers`
/// WordPiece decoder's clean-up without its " do not" → " don't").
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// The prompt from the start of the word holding token `first_cut` (the first one that
/// did not fit) to its end, as the user typed it.
fn dropped_text(text: &str, enc: &tokenizers::Encoding, first_cut: usize) -> String {
    let offsets = enc.get_offsets();
    let words = enc.get_word_ids();
    let mut start_tok = first_cut;
    if let Some(w) = words.get(first_cut).copied().flatten() {
        // Back to the first token of that word (BOS at 0 has no word).
        while start_tok > 1 && words.get(start_tok - 1).copied().flatten() == Some(w) {
            start_tok -= 1;
        }
    }
    let mut start = offsets
        .get(start_tok)
        .map_or(text.len(), |o| o.0)
        .min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    text[start..].trim().to_string()
}
