//! Per-word attention maps (DAAM, Tang et al. 2023, "What the DAAM"): where each word
//! of the prompt acted on the image. The GPU side is [`crate::ops::AttentionMaps`]; this
//! is what a user gets: `tokens.npy` (float32 `[n_tokens, h/8, w/8]`, the prompt's
//! tokens in order, BOS/EOS/padding left out), `words.json` (word → token indices) and
//! one heat-map overlay per word at image size.

use crate::error::Result;
use crate::image_io::{ImageMetadata, encode_npy_f32, encode_png};
use crate::tokenizer::PromptTokenizer;

/// The summed maps of one generation, per token, on the latent grid.
#[derive(Clone, Debug)]
pub struct WordMaps {
    /// The prompt's token ids, in order (no BOS, EOS or padding).
    pub token_ids: Vec<u32>,
    /// Each token's BPE piece, `</w>` marking a word's last piece.
    pub pieces: Vec<String>,
    /// Words in prompt order, each with its token indices (a word the BPE split has
    /// several: "pleural" is "ple" + "ural").
    pub words: Vec<(String, Vec<usize>)>,
    /// `[tokens, h, w]`, row-major.
    pub maps: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

impl WordMaps {
    pub fn new(
        tok: &PromptTokenizer,
        token_ids: Vec<u32>,
        maps: Vec<f32>,
        h: usize,
        w: usize,
    ) -> Self {
        let pieces: Vec<String> = token_ids
            .iter()
            .map(|&id| tok.inner().id_to_token(id).unwrap_or_default())
            .collect();
        let mut words: Vec<(String, Vec<usize>)> = Vec::new();
        let mut word = String::new();
        let mut idx = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            idx.push(i);
            match p.strip_suffix("</w>") {
                Some(last) => {
                    word.push_str(last);
                    words.push((std::mem::take(&mut word), std::mem::take(&mut idx)));
                }
                None => word.push_str(p),
            }
        }
        if !idx.is_empty() {
            // a prompt cut at 77 tokens can end inside a word
            words.push((word, idx));
        }
        WordMaps {
            token_ids,
            pieces,
            words,
            maps,
            h,
            w,
        }
    }

    /// `tokens.npy`.
    pub fn tokens_npy(&self) -> Vec<u8> {
        encode_npy_f32(&self.maps, &[self.token_ids.len(), self.h, self.w])
    }

    /// `words.json`: `{"word": [token indices], ...}` in prompt order; a word that comes
    /// twice lists the tokens of both.
    pub fn words_json(&self) -> String {
        // in prompt order (serde_json's map would sort the keys)
        let mut merged: Vec<(&str, Vec<usize>)> = Vec::new();
        for (word, idx) in &self.words {
            match merged.iter_mut().find(|(w, _)| w == word) {
                Some((_, all)) => all.extend(idx),
                None => merged.push((word, idx.clone())),
            }
        }
        let body: Vec<String> = merged
            .iter()
            .map(|(w, idx)| {
                let key = serde_json::to_string(w).unwrap_or_default();
                let list = serde_json::to_string(idx).unwrap_or_default();
                format!("  {key}: {list}")
            })
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    /// A word's map on the latent grid: its tokens' maps summed.
    pub fn word_map(&self, word: usize) -> Vec<f32> {
        let plane = self.h * self.w;
        let mut out = vec![0f32; plane];
        for &t in &self.words[word].1 {
            for (o, v) in out.iter_mut().zip(&self.maps[t * plane..(t + 1) * plane]) {
                *o += v;
            }
        }
        out
    }

    /// A word's heat map at image size (bilinear, as the grid's cells' centres), scaled
    /// to [0, 1] by its own range.
    pub fn heat(&self, word: usize, width: usize, height: usize) -> Vec<f32> {
        let m = self.word_map(word);
        let up = bilinear(&m, self.h, self.w, height, width);
        let (lo, hi) = up
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        up.iter().map(|&v| (v - lo) / span).collect()
    }

    /// An RGB PNG of `gray` (the image, 8-bit, `width x height`) with the word's heat
    /// laid over it (transparent blue to red, half opacity at the hottest).
    /// `meta`: the generation's settings (the PNG says it is synthetic).
    pub fn overlay_png(
        &self,
        word: usize,
        gray: &[u8],
        width: usize,
        height: usize,
        meta: &ImageMetadata,
    ) -> Result<Vec<u8>> {
        let heat = self.heat(word, width, height);
        let mut rgb = Vec::with_capacity(width * height * 3);
        for (&g, &v) in gray.iter().zip(&heat) {
            let g = g as f32;
            let (r, gg, b) = colormap(v);
            let a = 0.6 * v;
            for c in [r, gg, b] {
                rgb.push(((1.0 - a) * g + a * c).round().clamp(0.0, 255.0) as u8);
            }
        }
        encode_png(&rgb, width, height, 3, meta)
    }
}

/// A blue-cyan-yellow-red ramp for v in [0, 1].
fn colormap(v: f32) -> (f32, f32, f32) {
    let v = v.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0);
    (255.0 * r, 255.0 * g, 255.0 * b)
}

/// PyTorch's `interpolate(mode="bilinear", align_corners=False)` of one plane.
pub fn bilinear(x: &[f32], hi: usize, wi: usize, ho: usize, wo: usize) -> Vec<f32> {
    let src = |scale: f32, d: usize| (scale * (d as f32 + 0.5) - 0.5).max(0.0);
    let (sh, sw) = (hi as f32 / ho as f32, wi as f32 / wo as f32);
    let mut out = Vec::with_capacity(ho * wo);
    for y in 0..ho {
        let fy = src(sh, y);
        let y0 = (fy as usize).min(hi - 1);
        let y1 = (y0 + 1).min(hi - 1);
        let ly = fy - y0 as f32;
        for xo in 0..wo {
            let fx = src(sw, xo);
            let x0 = (fx as usize).min(wi - 1);
            let x1 = (x0 + 1).min(wi - 1);
            let lx = fx - x0 as f32;
            let v = (1.0 - ly) * ((1.0 - lx) * x[y0 * wi + x0] + lx * x[y0 * wi + x1])
                + ly * ((1.0 - lx) * x[y1 * wi + x0] + lx * x[y1 * wi + x1]);
            out.push(v);
        }
    }
    out
}
