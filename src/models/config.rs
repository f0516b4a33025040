//! Model configs, read from the checkpoint's own `config.json` files. Defaults are the
//! diffusers/transformers class defaults (not SD 1.4's values), so a field a file
//! leaves out means what it means to diffusers.

use serde::Deserialize;

use crate::error::{Error, Result};

/// A config value diffusers accepts as one number for all blocks or one per block.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i.min(v.len() - 1)],
        }
    }
    fn check(&self, n: usize, file: &str, field: &str) -> Result<()> {
        match self {
            PerBlock::Each(v) if v.len() != n => Err(Error::Config {
                file: file.into(),
                message: format!("`{field}` has {} entries for {n} blocks", v.len()),
            }),
            _ => Ok(()),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(file: &str, json: &str) -> Result<T> {
    let err = |message: String| Error::Config {
        file: file.into(),
        message,
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    // serde reads a struct from a JSON array too, field by field in order: a config is
    // an object, anything else is a wrong file
    if !value.is_object() {
        return Err(err(format!(
            "not a JSON object (a config is {{\"key\": value, ...}}; this is {})",
            kind(&value)
        )));
    }
    // parsed again from the text, so that an error keeps its line and column
    serde_json::from_str(json).map_err(|e| {
        let m = e.to_string();
        err(if m.contains("untagged enum PerBlock") {
            m.replace(
                "data did not match any variant of untagged enum PerBlock",
                "a per-block field (attention_head_dim, num_attention_heads, transformer_layers_per_block, cross_attention_dim) is neither a positive whole number nor a list of them",
            )
        } else {
            m
        })
    })
}

/// What a JSON value is, for messages.
pub fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Sizes a config may give, far beyond any Stable Diffusion model: configs come from
/// strangers' files, and an absurd size (10^9 channels) is refused here, naming the field,
/// before anything is allocated for it.
pub const MAX_CHANNELS: usize = 16_384;
pub const MAX_IO_CHANNELS: usize = 64;
pub const MAX_BLOCKS: usize = 8;
pub const MAX_LAYERS: usize = 64;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_POSITIONS: usize = 4096;

fn within(file: &str, field: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&v) {
        return Ok(());
    }
    Err(unsupported(
        file,
        format!("`{field}` is {v}; this engine takes {lo} to {hi} (is the file damaged?)"),
    ))
}

/// The sizes UNet and VAE configs share: the block widths and the image channels.
fn blocks_within(
    file: &str,
    blocks: &[usize],
    in_channels: usize,
    out_channels: usize,
) -> Result<()> {
    within(
        file,
        "block_out_channels (its length)",
        blocks.len(),
        1,
        MAX_BLOCKS,
    )?;
    for &ch in blocks {
        within(file, "block_out_channels", ch, 1, MAX_CHANNELS)?;
    }
    within(file, "in_channels", in_channels, 1, MAX_IO_CHANNELS)?;
    within(file, "out_channels", out_channels, 1, MAX_IO_CHANNELS)
}

fn per_block_within(file: &str, field: &str, v: &PerBlock, lo: usize, hi: usize) -> Result<()> {
    match v {
        PerBlock::One(x) => within(file, field, *x, lo, hi),
        PerBlock::Each(xs) => xs.iter().try_for_each(|&x| within(file, field, x, lo, hi)),
    }
}

fn unsupported(file: &str, message: String) -> Error {
    Error::Config {
        file: file.into(),
        message,
    }
}

/// `transformers.CLIPTextConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_49408")]
    pub vocab_size: usize,
    #[serde(default = "d_512")]
    pub hidden_size: usize,
    #[serde(default = "d_2048")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_8")]
    pub num_attention_heads: usize,
    #[serde(default = "d_77")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_1e5")]
    pub layer_norm_eps: f32,
}

/// `transformers.BertConfig`: RadEdit's text encoder (CXR-BERT, BioViL-T) and any BERT.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    #[serde(default = "d_30522")]
    pub vocab_size: usize,
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_512")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_2")]
    pub type_vocab_size: usize,
    #[serde(default = "d_1e12")]
    pub layer_norm_eps: f32,
    #[serde(default = "d_absolute")]
    pub position_embedding_type: String,
}

/// Which text encoder a checkpoint has, told from its `config.json`: a BERT where
/// `model_type` is `bert` or `cxr-bert`, or `architectures` names `BertModel`,
/// `BertForMaskedLM` or `CXRBertModel`; otherwise a CLIP text tower.
#[derive(Clone, Debug)]
pub enum TextConfig {
    Clip(ClipTextConfig),
    Bert(BertConfig),
}

impl TextConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let v: serde_json::Value = parse(file, json)?;
        let bert_type = v["model_type"]
            .as_str()
            .is_some_and(|t| matches!(t, "bert" | "cxr-bert"));
        let bert_arch = v["architectures"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                matches!(
                    x.as_str(),
                    Some("BertModel" | "BertForMaskedLM" | "CXRBertModel")
                )
            })
        });
        if bert_type || bert_arch {
            Ok(TextConfig::Bert(BertConfig::from_json(file, json)?))
        } else {
            Ok(TextConfig::Clip(ClipTextConfig::from_json(file, json)?))
        }
    }

    /// The width of the hidden states the UNet attends to.
    pub fn hidden_size(&self) -> usize {
        match self {
            TextConfig::Clip(c) => c.hidden_size,
            TextConfig::Bert(c) => c.hidden_size,
        }
    }

    pub fn max_position_embeddings(&self) -> usize {
        match self {
            TextConfig::Clip(c) => c.max_position_embeddings,
            TextConfig::Bert(c) => c.max_position_embeddings,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            TextConfig::Clip(c) => c.vocab_size,
            TextConfig::Bert(c) => c.vocab_size,
        }
    }

    pub fn num_attention_heads(&self) -> usize {
        match self {
            TextConfig::Clip(c) => c.num_attention_heads,
            TextConfig::Bert(c) => c.num_attention_heads,
        }
    }

    /// "CLIP" or "BERT", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TextConfig::Clip(_) => "CLIP",
            TextConfig::Bert(_) => "BERT",
        }
    }
}

/// The sizes every transformer text encoder's config gives (CLIP's and BERT's field
/// names), each within the engine's limits, the heads dividing the width.
struct TextSizes {
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    positions: usize,
}

impl TextSizes {
    fn check(&self, file: &str) -> Result<()> {
        within(file, "vocab_size", self.vocab, 1, MAX_VOCAB)?;
        within(file, "hidden_size", self.hidden, 1, MAX_CHANNELS)?;
        within(
            file,
            "intermediate_size",
            self.intermediate,
            1,
            4 * MAX_CHANNELS,
        )?;
        within(file, "num_hidden_layers", self.layers, 1, MAX_LAYERS)?;
        within(file, "num_attention_heads", self.heads, 1, 256)?;
        within(
            file,
            "max_position_embeddings",
            self.positions,
            2,
            MAX_POSITIONS,
        )?;
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(unsupported(
                file,
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden, self.heads
                ),
            ));
        }
        Ok(())
    }
}

impl BertConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        TextSizes {
            vocab: c.vocab_size,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            positions: c.max_position_embeddings,
        }
        .check(file)?;
        within(file, "type_vocab_size", c.type_vocab_size, 1, 64)?;
        if c.hidden_act != "gelu" {
            return Err(unsupported(
                file,
                format!(
                    "hidden_act `{}` is not supported for a BERT text encoder (gelu)",
                    c.hidden_act
                ),
            ));
        }
        if c.position_embedding_type != "absolute" {
            return Err(unsupported(
                file,
                format!(
                    "position_embedding_type `{}` is not supported (absolute)",
                    c.position_embedding_type
                ),
            ));
        }
        if !(c.layer_norm_eps > 0.0 && c.layer_norm_eps < 1.0) {
            return Err(unsupported(
                file,
                format!("layer_norm_eps {} is not in (0, 1)", c.layer_norm_eps),
            ));
        }
        Ok(c)
    }
}

/// `diffusers.UNet2DConditionModel`'s config (the parts SD 1.x and 2.x use).
#[derive(Clone, Debug, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_4")]
    pub in_channels: usize,
    #[serde(default = "d_4")]
    pub out_channels: usize,
    #[serde(default = "d_unet_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_unet_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_unet_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_unet_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_per_block_2")]
    pub layers_per_block: PerBlock,
    #[serde(default = "d_1280")]
    pub cross_attention_dim: usize,
    /// Diffusers' historical naming: for SD 1.x/2.x this is the number of heads
    /// (`num_attention_heads = num_attention_heads or attention_head_dim`).
    #[serde(default = "d_per_block_8")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default = "d_per_block_1")]
    pub transformer_layers_per_block: PerBlock,
    #[serde(default = "d_32")]
    pub norm_num_groups: usize,
    #[serde(default = "d_1e5")]
    pub norm_eps: f32,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

/// `diffusers.AutoencoderKL`'s config.
#[derive(Clone, Debug, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_3")]
    pub in_channels: usize,
    #[serde(default = "d_3")]
    pub out_channels: usize,
    #[serde(default = "d_4")]
    pub latent_channels: usize,
    #[serde(default = "d_vae_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_vae_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_vae_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_1")]
    pub layers_per_block: usize,
    #[serde(default = "d_32")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f32,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_silu")]
    pub act_fn: String,
}

impl ClipTextConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        TextSizes {
            vocab: c.vocab_size,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            positions: c.max_position_embeddings,
        }
        .check(file)?;
        if !matches!(c.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(unsupported(
                file,
                format!(
                    "hidden_act `{}` is not supported (quick_gelu, gelu)",
                    c.hidden_act
                ),
            ));
        }
        Ok(c)
    }
}

impl UNetConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        let n = c.block_out_channels.len();
        blocks_within(file, &c.block_out_channels, c.in_channels, c.out_channels)?;
        within(
            file,
            "cross_attention_dim",
            c.cross_attention_dim,
            1,
            MAX_CHANNELS,
        )?;
        within(file, "norm_num_groups", c.norm_num_groups, 1, MAX_CHANNELS)?;
        per_block_within(file, "layers_per_block", &c.layers_per_block, 1, MAX_LAYERS)?;
        per_block_within(
            file,
            "attention_head_dim",
            &c.attention_head_dim,
            1,
            MAX_CHANNELS,
        )?;
        per_block_within(
            file,
            "transformer_layers_per_block",
            &c.transformer_layers_per_block,
            1,
            MAX_LAYERS,
        )?;
        if let Some(h) = &c.num_attention_heads {
            per_block_within(file, "num_attention_heads", h, 1, MAX_CHANNELS)?;
        }
        if c.down_block_types.len() != n || c.up_block_types.len() != n {
            return Err(unsupported(
                file,
                format!(
                    "{n} block_out_channels but {} down and {} up block types",
                    c.down_block_types.len(),
                    c.up_block_types.len()
                ),
            ));
        }
        for t in &c.down_block_types {
            if !matches!(t.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D") {
                return Err(unsupported(
                    file,
                    format!(
                        "down block type `{t}` is not supported (CrossAttnDownBlock2D, DownBlock2D)"
                    ),
                ));
            }
        }
        for t in &c.up_block_types {
            if !matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D") {
                return Err(unsupported(
                    file,
                    format!("up block type `{t}` is not supported (CrossAttnUpBlock2D, UpBlock2D)"),
                ));
            }
        }
        if c.mid_block_type
            .as_deref()
            .is_some_and(|t| t != "UNetMidBlock2DCrossAttn")
        {
            return Err(unsupported(
                file,
                format!("mid block type {:?} is not supported", c.mid_block_type),
            ));
        }
        if c.class_embed_type.is_some() || c.addition_embed_type.is_some() {
            return Err(unsupported(
                file,
                "class or addition embeddings (SDXL, upscalers) are not supported".into(),
            ));
        }
        if c.resnet_time_scale_shift != "default" || c.act_fn != "silu" || c.center_input_sample {
            return Err(unsupported(file, "only resnet_time_scale_shift \"default\", act_fn \"silu\" and no input centering are supported".into()));
        }
        if c.only_cross_attention.as_bool() == Some(true) || c.only_cross_attention.is_array() {
            return Err(unsupported(
                file,
                "only_cross_attention is not supported".into(),
            ));
        }
        c.layers_per_block.check(n, file, "layers_per_block")?;
        c.attention_head_dim.check(n, file, "attention_head_dim")?;
        c.transformer_layers_per_block
            .check(n, file, "transformer_layers_per_block")?;
        if let Some(h) = &c.num_attention_heads {
            h.check(n, file, "num_attention_heads")?;
        }
        // every transformer of block i (down, mid for the last, up for its mirror)
        // splits block_out_channels[i] in heads(i) heads
        let heads_field = if c.num_attention_heads.is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        for (i, &ch) in c.block_out_channels.iter().enumerate() {
            let heads = c.heads(i);
            if !ch.is_multiple_of(heads) {
                return Err(unsupported(
                    file,
                    format!(
                        "`{heads_field}` gives block {i} {heads} heads, but its {ch} channels (block_out_channels[{i}]) do not split into {heads} heads; the head count must divide the block's width (is the file damaged?)"
                    ),
                ));
            }
        }
        if let Some(s) = c.sample_size {
            within(file, "sample_size", s, 1, MAX_POSITIONS)?;
        }
        Ok(c)
    }

    /// Heads of down block `i`'s transformers (diffusers' quirk: `attention_head_dim`
    /// stands for the head count when `num_attention_heads` is absent).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(i)
    }
}

impl VaeConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        blocks_within(file, &c.block_out_channels, c.in_channels, c.out_channels)?;
        within(
            file,
            "latent_channels",
            c.latent_channels,
            1,
            MAX_IO_CHANNELS,
        )?;
        within(file, "layers_per_block", c.layers_per_block, 1, MAX_LAYERS)?;
        within(file, "norm_num_groups", c.norm_num_groups, 1, MAX_CHANNELS)?;
        if !c.scaling_factor.is_finite() || c.scaling_factor <= 0.0 {
            return Err(unsupported(
                file,
                format!(
                    "`scaling_factor` is {}; it must be a positive number (SD 1.x: 0.18215)",
                    c.scaling_factor
                ),
            ));
        }
        if c.act_fn != "silu" {
            return Err(unsupported(
                file,
                format!("act_fn `{}` is not supported", c.act_fn),
            ));
        }
        // images go in and come out as RGB (an edit's init image is uploaded as 3
        // channels, a decoded image is read as 3): another width would fail deep in a
        // generation
        for (field, v) in [
            ("in_channels", c.in_channels),
            ("out_channels", c.out_channels),
        ] {
            if v != 3 {
                return Err(unsupported(
                    file,
                    format!(
                        "`{field}` is {v}; this engine reads and writes RGB images through the VAE, so it takes 3 (every Stable Diffusion VAE has 3)"
                    ),
                ));
            }
        }
        let n = c.block_out_channels.len();
        for (field, types) in [
            ("down_block_types", &c.down_block_types),
            ("up_block_types", &c.up_block_types),
        ] {
            if types.len() != n {
                return Err(unsupported(
                    file,
                    format!(
                        "`{field}` has {} entries for {n} block_out_channels; each block has one type",
                        types.len()
                    ),
                ));
            }
        }
        for t in c.down_block_types.iter().chain(&c.up_block_types) {
            if !matches!(t.as_str(), "DownEncoderBlock2D" | "UpDecoderBlock2D") {
                return Err(unsupported(
                    file,
                    format!("block type `{t}` is not supported"),
                ));
            }
        }
        Ok(c)
    }

    /// Image pixels per latent pixel.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn d_2() -> usize {
    2
}
fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_30522() -> usize {
    30_522
}
fn d_1e12() -> f32 {
    1e-12
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_absolute() -> String {
    "absolute".into()
}
fn d_1() -> usize {
    1
}
fn d_3() -> usize {
    3
}
fn d_4() -> usize {
    4
}
fn d_8() -> usize {
    8
}
fn d_12() -> usize {
    12
}
fn d_32() -> usize {
    32
}
fn d_77() -> usize {
    77
}
fn d_512() -> usize {
    512
}
fn d_1280() -> usize {
    1280
}
fn d_2048() -> usize {
    2048
}
fn d_49408() -> usize {
    49408
}
fn d_1e5() -> f32 {
    1e-5
}
fn d_scaling() -> f32 {
    0.18215
}
fn d_true() -> bool {
    true
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_per_block_1() -> PerBlock {
    PerBlock::One(1)
}
fn d_per_block_2() -> PerBlock {
    PerBlock::One(2)
}
fn d_per_block_8() -> PerBlock {
    PerBlock::One(8)
}
fn d_unet_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_vae_channels() -> Vec<usize> {
    vec![64]
}
fn d_unet_down() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_unet_up() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_unet_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_vae_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_vae_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}

/// Configs of the models this engine was built for, with their sources, for benchmarks
/// at real shapes without a checkpoint.
pub mod presets {
    /// RoentGen v1 = Stable Diffusion v1.4 architecture; numbers from
    /// CompVis/stable-diffusion-v1-4 `unet/config.json`, `vae/config.json` and
    /// `text_encoder/config.json` (CLIP ViT-L/14 text tower).
    pub const SD14_UNET: &str = r#"{"in_channels":4,"out_channels":4,"block_out_channels":[320,640,1280,1280],
        "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
        "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
        "layers_per_block":2,"cross_attention_dim":768,"attention_head_dim":8,"norm_num_groups":32,
        "norm_eps":1e-5,"flip_sin_to_cos":true,"freq_shift":0,"downsample_padding":1,"sample_size":64}"#;
    pub const SD14_VAE: &str = r#"{"in_channels":3,"out_channels":3,"latent_channels":4,
        "block_out_channels":[128,256,512,512],
        "down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
        "up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"],
        "layers_per_block":2,"norm_num_groups":32,"scaling_factor":0.18215,"sample_size":512}"#;
    /// SD 1.4's `scheduler/scheduler_config.json` (PNDM).
    pub const SD14_SCHEDULER: &str = r#"{"_class_name":"PNDMScheduler","beta_start":0.00085,"beta_end":0.012,
"beta_schedule":"scaled_linear","num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,
"steps_offset":1,"clip_sample":false}"#;
    /// microsoft/BiomedVLP-BioViL-T's `config.json` (RadEdit's CXR-BERT): BERT-base sizes.
    pub const BIOVIL_T_BERT: &str = r#"{"architectures":["CXRBertModel"],"model_type":"cxr-bert",
        "vocab_size":30522,"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,
        "intermediate_size":3072,"hidden_act":"gelu","max_position_embeddings":512,
        "type_vocab_size":2,"layer_norm_eps":1e-12,"projection_size":128}"#;
    pub const SD14_CLIP: &str = r#"{"vocab_size":49408,"hidden_size":768,"intermediate_size":3072,
        "num_hidden_layers":12,"num_attention_heads":12,"max_position_embeddings":77,
        "hidden_act":"quick_gelu","layer_norm_eps":1e-5}"#;
}

#[cfg(test)]
mod tests {
    use super::presets::{SD14_CLIP, SD14_UNET, SD14_VAE};
    use super::*;

    /// `preset` with `field` set to `value` (JSON).
    fn with(preset: &str, field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(preset).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn absurd_sizes_are_refused_naming_the_field() {
        assert!(UNetConfig::from_json("u", SD14_UNET).is_ok());
        assert!(VaeConfig::from_json("v", SD14_VAE).is_ok());
        assert!(ClipTextConfig::from_json("c", SD14_CLIP).is_ok());
        // (model, field, value): each refused naming the field
        let cases: &[(&str, &str, &str)] = &[
            ("unet", "block_out_channels", "[320, 640, 1000000000, 1280]"),
            ("unet", "block_out_channels", "[]"),
            ("unet", "in_channels", "0"),
            ("unet", "layers_per_block", "100000"),
            ("unet", "attention_head_dim", "[8, 0, 8, 8]"),
            ("unet", "cross_attention_dim", "1000000000"),
            ("unet", "norm_num_groups", "0"),
            ("vae", "block_out_channels", "[]"),
            ("vae", "latent_channels", "1000000000"),
            ("vae", "scaling_factor", "-1"),
            ("vae", "layers_per_block", "0"),
            ("clip", "hidden_size", "1000000000"),
            ("clip", "vocab_size", "0"),
            ("clip", "num_attention_heads", "0"),
            ("clip", "max_position_embeddings", "100000000"),
            // a wrong type: serde names the type it wanted and the place (line, column)
            ("unet", "in_channels", "\"four\""),
        ];
        for &(model, field, value) in cases {
            let want = if value.starts_with('"') {
                "expected usize"
            } else {
                field
            };
            let e = match model {
                "unet" => {
                    UNetConfig::from_json("unet/config.json", &with(SD14_UNET, field, value)).err()
                }
                "vae" => {
                    VaeConfig::from_json("vae/config.json", &with(SD14_VAE, field, value)).err()
                }
                _ => ClipTextConfig::from_json(
                    "text_encoder/config.json",
                    &with(SD14_CLIP, field, value),
                )
                .err(),
            }
            .unwrap_or_else(|| panic!("{model} {field} = {value}: accepted"))
            .to_string();
            assert!(
                e.contains(want) && e.contains("config.json"),
                "{model} {field}: {e}"
            );
        }
    }
}
