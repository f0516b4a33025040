//! The text encoder a checkpoint conditions its UNet with: one type over the families
//! (CLIP for RoentGen / Stable Diffusion, BERT for RadEdit), chosen from its config
//! ([`TextConfig::from_json`]).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::models::bert::BertModel;
use crate::models::clip::ClipTextModel;
use crate::models::config::TextConfig;
use crate::tokenizer::PromptTokenizer;

pub enum TextEncoder {
    Clip(ClipTextModel),
    Bert(BertModel),
}

impl TextEncoder {
    pub fn load(l: &Loader, config: TextConfig) -> Result<TextEncoder> {
        Ok(match config {
            TextConfig::Clip(c) => TextEncoder::Clip(ClipTextModel::load(l, c)?),
            TextConfig::Bert(c) => TextEncoder::Bert(BertModel::load(l, c)?),
        })
    }

    /// `ids [B][T]` -> the UNet's context `[B, T, D]`.
    pub fn forward(&self, gpu: &Gpu, ids: &[Vec<u32>]) -> Result<Tensor> {
        match self {
            TextEncoder::Clip(m) => m.forward(gpu, ids),
            TextEncoder::Bert(m) => m.forward(gpu, ids),
        }
    }

    pub fn config(&self) -> TextConfig {
        match self {
            TextEncoder::Clip(m) => TextConfig::Clip(m.config.clone()),
            TextEncoder::Bert(m) => TextConfig::Bert(m.config.clone()),
        }
    }
}

/// The tokenizer's prompts fit this text encoder: the same kind (BPE for CLIP, WordPiece
/// for BERT), no longer than its positions (`max_position_embeddings`), no id past its
/// embeddings (`vocab_size`). A mismatch (a tokenizer from another model) is said naming
/// both files and both numbers, at load, not at the first generation.
pub fn check_tokenizer(
    config: &TextConfig,
    text_file: &str,
    tokenizer: &PromptTokenizer,
) -> Result<()> {
    let fix = "the folder mixes two models: take both from the same checkpoint";
    let wordpiece = tokenizer.is_wordpiece();
    let bert = matches!(config, TextConfig::Bert(_));
    if wordpiece != bert {
        return Err(Error::Input(format!(
            "the parts of this model do not fit together: the tokenizer (tokenizer/) is {}, but the text encoder ({text_file}) is a {} text encoder, which needs {}; {fix}",
            if wordpiece {
                "a BERT WordPiece vocabulary (vocab.txt)"
            } else {
                "CLIP's BPE (vocab.json + merges.txt)"
            },
            config.kind(),
            if bert {
                "a WordPiece vocab.txt"
            } else {
                "vocab.json + merges.txt"
            },
        )));
    }
    if tokenizer.max_length() > config.max_position_embeddings() {
        return Err(Error::Input(format!(
            "the parts of this model do not fit together: the tokenizer (tokenizer/tokenizer_config.json, model_max_length) pads prompts to {} tokens, but the text encoder ({text_file}) has {} positions (max_position_embeddings); {fix}",
            tokenizer.max_length(),
            config.max_position_embeddings()
        )));
    }
    let largest = tokenizer
        .inner()
        .get_vocab(true)
        .into_values()
        .chain([tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()])
        .max()
        .unwrap_or(0) as usize;
    if largest >= config.vocab_size() {
        return Err(Error::Input(format!(
            "the parts of this model do not fit together: the tokenizer (tokenizer/) has token id {largest}, but the text encoder ({text_file}) embeds {} tokens (vocab_size); {fix}",
            config.vocab_size()
        )));
    }
    Ok(())
}
