//! Tensor operations, each one dispatch of a kernel from `shaders/`, one file per
//! kernel family: each owns its shaders, its generators and the choice of variant.
//!
//! Shapes follow the engine's layouts: feature maps NHWC `[B, H, W, C]`, token
//! sequences `[B, T, C]`. Weights keep PyTorch's `[out, in]` for linear layers and are
//! reordered to `[Cout, KH, KW, Cin]` for convolutions at load (see `nn::Conv2d`).

mod attention;
#[doc(hidden)]
pub mod contract;
mod elementwise;
mod gemm;
mod norm;

pub use attention::AttentionMaps;
pub use elementwise::Map;
pub use gemm::{ConvGeom, channel_slices};

/// Every kernel's contract (the WGSL handed to wgpu for each form and specialisation
/// the ops dispatch, its `Params` mirror and bind group), for
/// `tests/kernel_contracts.rs`.
#[doc(hidden)]
pub fn kernel_contracts() -> Vec<contract::KernelContract> {
    [
        elementwise::contracts(),
        norm::contracts(),
        attention::contracts(),
        gemm::contracts(),
    ]
    .concat()
}

/// Workgroups for one per item, folded into y beyond the 65,535 limit of x.
pub(crate) fn grid(n: usize) -> [u32; 3] {
    if n <= 65535 {
        [n as u32, 1, 1]
    } else {
        [65535, n.div_ceil(65535) as u32, 1]
    }
}

pub(crate) fn wg1d(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(256) as u32;
    if groups <= 65535 {
        [groups, 1, 1]
    } else {
        [65535, groups.div_ceil(65535), 1]
    }
}
