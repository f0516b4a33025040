//! `transformers.BertModel`: RadEdit's text encoder (CXR-BERT from BioViL-T, class
//! `CXRBertModel`, a `BertForMaskedLM`), as diffusers calls it: no attention mask (the
//! `[PAD]` positions are attended to and are part of the context), token type ids all 0,
//! and the last encoder layer's hidden states (no pooler) are the UNet's context.
//!
//! Post-LayerNorm blocks: `x = LN(x + attn(x))`, `x = LN(x + ffn(x))`, after the
//! embeddings' own LayerNorm. Keys with or without the `bert.` prefix (`BertForMaskedLM`
//! and `CXRBertModel` save it, `BertModel` does not); the heads (`cls.*`,
//! `cls_projection_head.*`) and the pooler are never read.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::models::config::BertConfig;
use crate::nn::{LayerNorm, Linear, gather_embeddings};
use crate::ops::Map;

/// Key prefixes of a BERT checkpoint that generation never reads: the masked-LM head
/// (`cls.*`, whose decoder shares the word embeddings' storage in a `.bin`), CXR-BERT's
/// projection head (`cls_projection_head.*`) and the pooler. The converter leaves them
/// out of a converted text encoder (less to store and download).
pub const UNUSED_PREFIXES: &[&str] = &["cls.", "cls_projection_head.", "bert.pooler.", "pooler."];

/// Whether generation never reads tensor `name` of a BERT checkpoint ([`UNUSED_PREFIXES`]).
pub fn unused(name: &str) -> bool {
    UNUSED_PREFIXES.iter().any(|p| name.starts_with(p))
}

pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
}

pub struct BertModel {
    pub config: BertConfig,
    /// `word_embeddings` `[vocab, D]`, `position_embeddings` `[positions, D]` and the
    /// token type 0 row stay on the CPU (a prompt needs 128 rows of a 30,522-row table).
    pub word_embeddings: Vec<f32>,
    pub position_embeddings: Vec<f32>,
    pub token_type_0: Vec<f32>,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
}

/// A BERT LayerNorm: `weight`/`bias`, or `gamma`/`beta` in checkpoints from the
/// TensorFlow era (transformers renames them on load).
fn layer_norm(l: &Loader, dim: usize, eps: f32) -> Result<LayerNorm> {
    if !l.contains("weight") && l.contains("gamma") {
        return Ok(LayerNorm {
            weight: l.vector("gamma", dim)?,
            bias: l.vector("beta", dim)?,
            eps,
        });
    }
    LayerNorm::load(l, dim, eps)
}

impl BertModel {
    pub fn load(root: &Loader, config: BertConfig) -> Result<Self> {
        let c = &config;
        let d = c.hidden_size;
        let l = if root.contains("bert.embeddings.word_embeddings.weight") {
            root.pp("bert")
        } else {
            root.clone()
        };
        let emb = l.pp("embeddings");
        let word_embeddings = emb.f32("word_embeddings.weight", &[c.vocab_size, d])?;
        let position_embeddings = emb.f32(
            "position_embeddings.weight",
            &[c.max_position_embeddings, d],
        )?;
        let types = emb.f32("token_type_embeddings.weight", &[c.type_vocab_size, d])?;
        let token_type_0 = types[..d].to_vec();
        let embeddings_norm = layer_norm(&emb.pp("LayerNorm"), d, c.layer_norm_eps)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let ll = l.pp("encoder").pp("layer").pp(i);
                let a = ll.pp("attention");
                let s = a.pp("self");
                Ok(BertLayer {
                    query: Linear::load(&s.pp("query"), d, d, true)?,
                    key: Linear::load(&s.pp("key"), d, d, true)?,
                    value: Linear::load(&s.pp("value"), d, d, true)?,
                    attention_output: Linear::load(&a.pp("output").pp("dense"), d, d, true)?,
                    attention_norm: layer_norm(
                        &a.pp("output").pp("LayerNorm"),
                        d,
                        c.layer_norm_eps,
                    )?,
                    intermediate: Linear::load(
                        &ll.pp("intermediate").pp("dense"),
                        d,
                        c.intermediate_size,
                        true,
                    )?,
                    output: Linear::load(
                        &ll.pp("output").pp("dense"),
                        c.intermediate_size,
                        d,
                        true,
                    )?,
                    output_norm: layer_norm(&ll.pp("output").pp("LayerNorm"), d, c.layer_norm_eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(BertModel {
            config,
            word_embeddings,
            position_embeddings,
            token_type_0,
            embeddings_norm,
            layers,
        })
    }

    /// `ids [B][T]` -> `last_hidden_state [B, T, D]`.
    pub fn forward(&self, gpu: &Gpu, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.forward_traced(gpu, ids, None)
    }

    /// The forward pass, keeping the embeddings' output and every layer's output in
    /// `trace` (parity tests).
    pub fn forward_traced(
        &self,
        gpu: &Gpu,
        ids: &[Vec<u32>],
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let d = c.hidden_size;
        // 1. embeddings: word + position + token type 0, gathered on the CPU, then LayerNorm
        let (x, b, t) = gather_embeddings(
            ids,
            c.max_position_embeddings,
            c.vocab_size,
            d,
            |id, pos, k| {
                // transformers' order: (word + token type) + position
                (self.word_embeddings[id * d + k] + self.token_type_0[k])
                    + self.position_embeddings[pos * d + k]
            },
        )?;
        let x = gpu.upload(&x, &[b, t, d])?;
        let mut x = self.embeddings_norm.forward(gpu, &x);
        if let Some(tr) = trace.as_deref_mut() {
            tr.push(x.clone());
        }
        // 2. encoder layers (post-norm, bidirectional self-attention, no mask)
        for layer in &self.layers {
            let q = layer.query.forward(gpu, &x);
            let k = layer.key.forward(gpu, &x);
            let v = layer.value.forward(gpu, &x);
            let o = gpu.attention(&q, &k, &v, c.num_attention_heads, false);
            let a = layer.attention_output.forward_res(gpu, &o, &x);
            let a = layer.attention_norm.forward(gpu, &a);
            let h = gpu.map(&layer.intermediate.forward(gpu, &a), Map::Gelu);
            let y = layer.output.forward_res(gpu, &h, &a);
            x = layer.output_norm.forward(gpu, &y);
            if let Some(tr) = trace.as_deref_mut() {
                tr.push(x.clone());
            }
        }
        Ok(x)
    }
}
