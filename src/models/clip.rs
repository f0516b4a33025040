//! `transformers.CLIPTextModel`: the text tower that conditions the UNet.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::models::config::ClipTextConfig;
use crate::nn::{LayerNorm, Linear, gather_embeddings};
use crate::ops::Map;

pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp_fc1: Linear,
    pub mlp_fc2: Linear,
    pub layer_norm2: LayerNorm,
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    /// `embeddings.token_embedding` `[vocab, D]` and `position_embedding` `[77, D]`
    /// stay on the CPU: a prompt needs 77 rows, and the 49,408-row table (152 MB in
    /// f32) would not fit WebGPU's default 128 MiB binding.
    pub token_embedding: Vec<f32>,
    pub position_embedding: Vec<f32>,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
}

/// Intermediate outputs, for parity tests.
#[derive(Default)]
pub struct ClipTrace {
    pub embeddings: Option<Tensor>,
    pub layers: Vec<Tensor>,
}

impl ClipTextModel {
    pub fn load(root: &Loader, config: ClipTextConfig) -> Result<Self> {
        let c = &config;
        let d = c.hidden_size;
        // transformers saves `text_model.`-prefixed names; some exports drop the prefix.
        let l = if root.contains("text_model.embeddings.token_embedding.weight")
            || !root.contains("embeddings.token_embedding.weight")
        {
            root.pp("text_model")
        } else {
            root.clone()
        };
        let emb = l.pp("embeddings");
        let token_embedding = emb.f32("token_embedding.weight", &[c.vocab_size, d])?;
        let position_embedding =
            emb.f32("position_embedding.weight", &[c.max_position_embeddings, d])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let ll = l.pp("encoder").pp("layers").pp(i);
                let a = ll.pp("self_attn");
                Ok(ClipEncoderLayer {
                    self_attn: ClipAttention {
                        q_proj: Linear::load(&a.pp("q_proj"), d, d, true)?,
                        k_proj: Linear::load(&a.pp("k_proj"), d, d, true)?,
                        v_proj: Linear::load(&a.pp("v_proj"), d, d, true)?,
                        out_proj: Linear::load(&a.pp("out_proj"), d, d, true)?,
                    },
                    layer_norm1: LayerNorm::load(&ll.pp("layer_norm1"), d, c.layer_norm_eps)?,
                    mlp_fc1: Linear::load(&ll.pp("mlp").pp("fc1"), d, c.intermediate_size, true)?,
                    mlp_fc2: Linear::load(&ll.pp("mlp").pp("fc2"), c.intermediate_size, d, true)?,
                    layer_norm2: LayerNorm::load(&ll.pp("layer_norm2"), d, c.layer_norm_eps)?,
                })
            })
            .collect::<Result<_>>()?;
        let final_layer_norm = LayerNorm::load(&l.pp("final_layer_norm"), d, c.layer_norm_eps)?;
        Ok(ClipTextModel {
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    /// `ids [B][T]` -> `last_hidden_state [B, T, D]`.
    pub fn forward(&self, gpu: &Gpu, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.forward_traced(gpu, ids, None)
    }

    pub fn forward_traced(
        &self,
        gpu: &Gpu,
        ids: &[Vec<u32>],
        mut trace: Option<&mut ClipTrace>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let d = c.hidden_size;
        // 1. embeddings: token + position, gathered on the CPU
        let (x, b, t) = gather_embeddings(
            ids,
            c.max_position_embeddings,
            c.vocab_size,
            d,
            |id, pos, k| self.token_embedding[id * d + k] + self.position_embedding[pos * d + k],
        )?;
        let mut x = gpu.upload(&x, &[b, t, d])?;
        if let Some(tr) = trace.as_deref_mut() {
            tr.embeddings = Some(x.clone());
        }
        let act = if c.hidden_act == "gelu" {
            Map::Gelu
        } else {
            Map::QuickGelu
        };
        // 2. encoder layers (pre-norm, causal self-attention, MLP)
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(gpu, &x);
            let a = &layer.self_attn;
            let q = a.q_proj.forward(gpu, &h);
            let k = a.k_proj.forward(gpu, &h);
            let v = a.v_proj.forward(gpu, &h);
            let o = gpu.attention(&q, &k, &v, c.num_attention_heads, true);
            x = a.out_proj.forward_res(gpu, &o, &x);
            let h = layer.layer_norm2.forward(gpu, &x);
            let h = gpu.map(&layer.mlp_fc1.forward(gpu, &h), act);
            x = layer.mlp_fc2.forward_res(gpu, &h, &x);
            if let Some(tr) = trace.as_deref_mut() {
                tr.layers.push(x.clone());
            }
        }
        // 3. final LayerNorm
        Ok(self.final_layer_norm.forward(gpu, &x))
    }
}
