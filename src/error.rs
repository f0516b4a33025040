//! The library's errors: each says what failed, on which file or tensor, and what to do.

use crate::weights::WeightError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter was found ({0}); natively install a Vulkan driver (e.g. `apt-get install mesa-vulkan-drivers` for the CPU driver lavapipe), in a browser enable WebGPU"
    )]
    NoAdapter(String),
    #[error("the GPU adapter refused to create a device: {0}")]
    NoDevice(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error(
        "the GPU ran out of memory ({0}); close other GPU-heavy tabs or programs, or generate a smaller image"
    )]
    OutOfMemory(String),
    #[error("the GPU device was lost ({0}); the model has to be loaded again")]
    DeviceLost(String),
    #[error("this GPU's `{limit}` is {have} bytes but the model needs {need} bytes in one buffer")]
    Limit {
        limit: &'static str,
        have: u64,
        need: u64,
    },
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("{file}: invalid config: {message}")]
    Config { file: String, message: String },
    #[error("the checkpoint has no `{path}`: {hint}")]
    MissingFile { path: String, hint: String },
    #[error("the browser's storage failed: {0}")]
    Storage(String),
    /// Fetching a model from a URL (the browser app's "download a model").
    #[error("downloading {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The user's input (an option, a prompt, a file's content) cannot be used: the
    /// sentence says what to change.
    #[error("{0}")]
    Input(String),
    /// A state inside the engine that should not happen: not the user's doing (the page
    /// says so rather than blaming their input).
    #[error(
        "internal error: {0}; this is a fault in roentgen-web, not in your input: please report it"
    )]
    Internal(String),
    /// An init image or mask that cannot be read (image-to-image, inpainting).
    #[error("{file}: {message}")]
    Image { file: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
