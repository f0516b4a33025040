//! Batch generation (`roentgen batch`, docs/BATCH.md): a table of prompts and labels
//! becomes a dataset of images and a manifest, sharded across processes, resumable, and
//! reproducible image by image.
//!
//! - [`table`]: CSV/JSONL prompt tables (bytes in: the fuzzer and the page can use it);
//! - [`plan`]: the jobs (row, image j) with their ids, files, seeds and shards;
//! - [`manifest`]: the manifest rows, reading shards' manifests back, merging them;
//! - `run` (native): making a shard's images, resumably; merging a dataset.

pub mod manifest;
pub mod plan;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod table;

pub use plan::{Job, PlanOptions, Shard, derived_seed, plan};
pub use table::{PromptTable, TableFormat, Template};
