//! The CLIP BPE tokenizer, exactly as transformers' `CLIPTokenizer` (5.x) builds it, which
//! is what `StableDiffusionPipeline` uses: built from a checkpoint's own `tokenizer/` folder.
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
//! [`PromptTokenizer::encode`] pads and truncates to `model_max_length` (77) as
//! `tokenizer(text, padding="max_length", max_length=77, truncation=True)` does.
//!
//! Bytes in, values out: no filesystem, no threads (builds for wasm32).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// The CLIP pre-tokenizer pattern (transformers' `CLIPTokenizer` / `CLIPConverter`).
pub const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// CLIP's text context: 77 positions.
pub const DEFAULT_MAX_LENGTH: usize = 77;

const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";

/// The raw files of a checkpoint's `tokenizer/` folder (whichever are present).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenizerFiles<'a> {
    pub vocab_json: Option<&'a [u8]>,
    pub merges_txt: Option<&'a [u8]>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub tokenizer_config_json: Option<&'a [u8]>,
    pub special_tokens_map_json: Option<&'a [u8]>,
}

/// A prompt as the text encoder takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_length` (77) ids: BOS, the prompt's tokens, EOS, then pad ids.
    pub ids: Vec<u32>,
    /// Ids before padding, BOS and EOS included, at most `max_length`.
    pub tokens_used: usize,
    /// The end of the prompt that did not fit (as typed, from the first word truncation cut
    /// into), for telling the user; `None` when everything fit.
    pub dropped: Option<String>,
}

/// transformers' `CLIPTokenizer`, on the `tokenizers` crate.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    pad_token: String,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
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

/// What a `tokenizer.json` contributes under transformers 5's `CLIPTokenizer`: its BPE
/// vocabulary, merges and added tokens (normalizer, pre-tokenizer and post-processor are
/// rebuilt, not read).
struct TokenizerJson {
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    added_tokens: Vec<(u32, Tok)>,
}

fn parse_tokenizer_json(bytes: &[u8]) -> Result<TokenizerJson> {
    const FILE: &str = "tokenizer/tokenizer.json";
    let root = parse_object(FILE, bytes)?;
    let model = root
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| config_err(FILE, "no `model` object"))?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(other) => {
            return Err(Error::Input(format!(
                "{FILE}: a `{other}` tokenizer model; the CLIP text encoder needs CLIP's BPE tokenizer"
            )));
        }
    }
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
        _ => return Err(config_err(FILE, "the BPE model has no `vocab`")),
    };
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
    let mut added_tokens = Vec::new();
    if let Some(Value::Array(items)) = root.get("added_tokens") {
        for item in items {
            let obj = item
                .as_object()
                .ok_or_else(|| config_err(FILE, format!("bad added token {item}")))?;
            let id = obj
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| config_err(FILE, format!("added token without id: {item}")))?;
            let tok = Tok::from_object(obj, false)
                .ok_or_else(|| config_err(FILE, format!("added token without content: {item}")))?;
            added_tokens.push((id as u32, tok));
        }
    }
    Ok(TokenizerJson {
        vocab,
        merges,
        added_tokens,
    })
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

fn special_tokens(
    config: Option<&Map<String, Value>>,
    special_map: Option<&Map<String, Value>>,
    json_added: &[(u32, Tok)],
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

    // CLIPTokenizer's defaults for the four it names.
    for (key, value) in named.iter_mut() {
        if value.is_none() {
            *value = match *key {
                "bos_token" => Some(SpecialValue::Str(DEFAULT_BOS.into())),
                "eos_token" | "unk_token" | "pad_token" => {
                    Some(SpecialValue::Str(DEFAULT_EOS.into()))
                }
                _ => None,
            };
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

impl PromptTokenizer {
    /// Builds the tokenizer from a checkpoint's `tokenizer/` files. `tokenizer.json` is
    /// preferred when present (as transformers does); otherwise `vocab.json` + `merges.txt`.
    pub fn from_files(f: TokenizerFiles) -> Result<Self> {
        let config = f
            .tokenizer_config_json
            .map(|b| parse_object("tokenizer/tokenizer_config.json", b))
            .transpose()?;
        let special_map = f
            .special_tokens_map_json
            .map(|b| parse_object("tokenizer/special_tokens_map.json", b))
            .transpose()?;

        let (vocab, merges, json_added) = match (f.tokenizer_json, f.vocab_json, f.merges_txt) {
            (Some(tj), _, _) => {
                let t = parse_tokenizer_json(tj)?;
                (t.vocab, t.merges, t.added_tokens)
            }
            (None, Some(v), Some(m)) => {
                let vocab = parse_vocab_map(
                    "tokenizer/vocab.json",
                    &parse_object("tokenizer/vocab.json", v)?,
                )?;
                (vocab, parse_merges_txt(m)?, Vec::new())
            }
            (None, Some(_), None) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/merges.txt".into(),
                    hint: "tokenizer/vocab.json is there but its merges.txt is not; the CLIP BPE tokenizer needs both (or a tokenizer/tokenizer.json)".into(),
                });
            }
            (None, None, Some(_)) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/vocab.json".into(),
                    hint: "tokenizer/merges.txt is there but its vocab.json is not; the CLIP BPE tokenizer needs both (or a tokenizer/tokenizer.json)".into(),
                });
            }
            (None, None, None) => {
                return Err(Error::MissingFile {
                    path: "tokenizer/tokenizer.json".into(),
                    hint: "nor tokenizer/vocab.json + tokenizer/merges.txt: the CLIP tokenizer needs one of the two (copy the checkpoint's whole tokenizer/ folder)".into(),
                });
            }
        };

        let max_length = match config.as_ref().and_then(|c| c.get("model_max_length")) {
            None | Some(Value::Null) => DEFAULT_MAX_LENGTH,
            // transformers writes 1e30-ish "no limit" values; CLIP has 77 positions.
            Some(Value::Number(n)) => match n.as_u64() {
                Some(l) if (3..=65_536).contains(&l) => l as usize,
                Some(l) if l < 3 => {
                    return Err(config_err(
                        "tokenizer/tokenizer_config.json",
                        format!("model_max_length {l} leaves no room for a prompt"),
                    ));
                }
                _ => DEFAULT_MAX_LENGTH,
            },
            Some(other) => {
                return Err(config_err(
                    "tokenizer/tokenizer_config.json",
                    format!("model_max_length is not a number: {other}"),
                ));
            }
        };

        let specials = special_tokens(config.as_ref(), special_map.as_ref(), &json_added)?;
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
                    "tokenizer/tokenizer_config.json",
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
            max_length,
            bos_id,
            eos_id,
            pad_id,
            pad_token,
        })
    }

    /// The text encoder's context length: `model_max_length` (77).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id: `<|endoftext|>` (49407) for SD 1.x, `!` (0) for SD 2.x.
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

    /// `tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids`,
    /// with how many tokens were used and what truncation cut off.
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

    /// Token ids back to text, as transformers' `decode` (`</w>` → space).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Input(format!("the tokenizer could not decode ids: {e}")))?;
        Ok(text.replace("</w>", " ").trim().to_string())
    }
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

impl PromptTokenizer {
    /// TEMPORARY until the WordPiece tokenizer lands (branch `wordpiece`).
    pub fn is_wordpiece(&self) -> bool {
        false
    }
}
