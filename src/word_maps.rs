//! Per-word attention maps (DAAM, Tang et al. 2023, "What the DAAM"): where each word
//! of the prompt acted on the image. The GPU side is [`crate::ops::AttentionMaps`]; this
//! is what a user gets: `tokens.npy` (float32 `[n_tokens, h/8, w/8]`, the prompt's
//! tokens in order, BOS/EOS/padding left out), `words.json` (word → token indices) and
//! one heat-map overlay per word at image size.

use crate::error::Result;
use crate::image_io::{ImageMetadata, encode_npy_f32, encode_png};
use crate::tokenizer::{PromptTokenizer, TokenizerKind};

/// The summed maps of one generation, per token, on the latent grid.
#[derive(Clone, Debug)]
pub struct WordMaps {
    /// The prompt's token ids, in order (no BOS, EOS or padding).
    pub token_ids: Vec<u32>,
    /// Each token's piece: CLIP's BPE marks a word's last piece with `</w>`, BERT's
    /// WordPiece a continuing piece with a leading `##`.
    pub pieces: Vec<String>,
    /// Words in prompt order, each with its token indices (a word the tokenizer split has
    /// several: "pleural" is CLIP's "ple" + "ural</w>", "hemithorax" WordPiece's "hemi" +
    /// "##thorax").
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
        let words = group_words(&pieces, tok.kind());
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

/// Groups a prompt's pieces into words, each with its token indices: CLIP's BPE ends a
/// word with a `</w>` piece, BERT's WordPiece continues one with `##` pieces (a `##` piece
/// with no word before it starts one).
fn group_words(pieces: &[String], kind: TokenizerKind) -> Vec<(String, Vec<usize>)> {
    let mut words: Vec<(String, Vec<usize>)> = Vec::new();
    let mut word = String::new();
    let mut idx = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        match kind {
            TokenizerKind::ClipBpe => {
                idx.push(i);
                match p.strip_suffix("</w>") {
                    Some(last) => {
                        word.push_str(last);
                        words.push((std::mem::take(&mut word), std::mem::take(&mut idx)));
                    }
                    None => word.push_str(p),
                }
            }
            TokenizerKind::WordPiece => match p.strip_prefix("##") {
                Some(rest) if !idx.is_empty() => {
                    word.push_str(rest);
                    idx.push(i);
                }
                _ => {
                    if !idx.is_empty() {
                        words.push((std::mem::take(&mut word), std::mem::take(&mut idx)));
                    }
                    word.push_str(p.strip_prefix("##").unwrap_or(p));
                    idx.push(i);
                }
            },
        }
    }
    if !idx.is_empty() {
        // WordPiece's last word; a CLIP prompt cut at 77 tokens can end inside a word
        words.push((word, idx));
    }
    words
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn words(groups: &[(String, Vec<usize>)]) -> Vec<(&str, &[usize])> {
        groups
            .iter()
            .map(|(w, i)| (w.as_str(), i.as_slice()))
            .collect()
    }

    #[test]
    fn clip_words_end_at_end_of_word_pieces() {
        let p = pieces(&[
            "small</w>",
            "ple",
            "ural</w>",
            "eff",
            "usion</w>",
            "pneu",
            "mo",
        ]);
        let g = group_words(&p, TokenizerKind::ClipBpe);
        assert_eq!(
            words(&g),
            [
                ("small", &[0][..]),
                ("pleural", &[1, 2]),
                ("effusion", &[3, 4]),
                // cut at the context's end inside a word
                ("pneumo", &[5, 6]),
            ]
        );
    }

    #[test]
    fn wordpiece_continuations_join_the_word_before() {
        // BERT's pieces of "Small right-sided hemithorax 12mm [UNK]" (BioViL-T-like vocab).
        let p = pieces(&[
            "small", "right", "-", "sided", "hemi", "##thor", "##ax", "1", "##2", "##mm", "[UNK]",
        ]);
        let g = group_words(&p, TokenizerKind::WordPiece);
        assert_eq!(
            words(&g),
            [
                ("small", &[0][..]),
                ("right", &[1]),
                ("-", &[2]),
                ("sided", &[3]),
                ("hemithorax", &[4, 5, 6]),
                ("12mm", &[7, 8, 9]),
                ("[UNK]", &[10]),
            ]
        );
        // a `##` piece first (a prompt whose first word was cut) starts a word
        let g = group_words(&pieces(&["##ion", "left"]), TokenizerKind::WordPiece);
        assert_eq!(words(&g), [("ion", &[0][..]), ("left", &[1])]);
        assert!(group_words(&[], TokenizerKind::WordPiece).is_empty());
    }

    #[test]
    fn wordpiece_words_from_the_fixture_vocabulary() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wordpiece/");
        let vocab = std::fs::read(format!("{dir}vocab.txt")).unwrap();
        let tok = PromptTokenizer::from_files(crate::tokenizer::TokenizerFiles {
            vocab_txt: Some(&vocab),
            ..Default::default()
        })
        .unwrap();
        let enc = tok.encode("Pneumothoraxes, 12mm.").unwrap();
        let ids = enc.ids[1..enc.tokens_used - 1].to_vec();
        let n = ids.len();
        let maps = WordMaps::new(&tok, ids, vec![0.0; n * 4], 2, 2);
        let names: Vec<&str> = maps.words.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(names, ["pneumothoraxes", ",", "12mm", "."]);
        assert_eq!(maps.pieces[..2], ["pneumothorax", "##es"]);
    }
}
