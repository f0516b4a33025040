//! roentgen-web: RoentGen (Stable Diffusion for chest X-rays) on WebGPU compute shaders.
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod convert;
pub mod dicom;
pub mod error;
pub mod findings;
#[doc(hidden)]
pub mod fuzzing;
pub mod generation;
pub mod gpu;
/// The Hugging Face Hub client (`--model ORG/NAME`): native only, the page uses fetch.
#[cfg(not(target_arch = "wasm32"))]
pub mod hub;
pub mod image_in;
pub mod image_io;
pub mod inversion;
pub mod kernel_check;
pub mod loader;
pub mod models;
pub mod nn;
pub mod ops;
#[cfg(not(target_arch = "wasm32"))]
pub mod output;
pub mod pipeline;
pub mod quant;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
pub mod web;
pub mod weights;
pub mod word_maps;

pub use error::{Error, Result};
