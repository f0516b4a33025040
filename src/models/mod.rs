//! The three networks of a Stable Diffusion checkpoint, each built from its own
//! `config.json`, with forward passes that follow diffusers/transformers step by step.

pub mod bert;
pub mod blocks;
pub mod clip;
pub mod config;
pub mod fit;
pub mod text;
pub mod unet;
pub mod vae;

pub use bert::BertModel;
pub use clip::ClipTextModel;
pub use config::{BertConfig, ClipTextConfig, TextConfig, UNetConfig, VaeConfig};
pub use text::TextEncoder;
pub use unet::UNet2DConditionModel;
pub use vae::AutoencoderKL;
