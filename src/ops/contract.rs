//! Each kernel's contract as the Rust side sees it: the WGSL text handed to wgpu, the
//! entry point, the `repr(C)` mirror of the WGSL `Params` block (its size, and each
//! field's offset and type) and the bind group a dispatch builds. The Rust structs are
//! mirrored by hand; `tests/kernel_contracts.rs` reflects every text with naga and checks
//! that both sides agree (STYLE.md item 18).

use crate::gpu::{BindingKind, KernelSpec, PARAM_STRIDE, declared_bindings};

/// A Rust `Params` struct as the compiler lays it out. Build with [`params_layout!`].
#[derive(Clone, Debug)]
pub struct ParamsLayout {
    /// The Rust type, e.g. `GemmParams`.
    pub rust_type: &'static str,
    /// `size_of` the Rust type.
    pub size: usize,
    /// Every field, in the order the macro lists them.
    pub fields: Vec<FieldLayout>,
}

#[derive(Clone, Debug)]
pub struct FieldLayout {
    /// The field's name in Rust.
    pub rust_name: &'static str,
    /// The member of the WGSL struct it mirrors (the Rust name unless the macro gives
    /// another, as the GEMM's `M`, `N`, `K`).
    pub wgsl_name: &'static str,
    /// `offset_of!` the field.
    pub offset: usize,
    /// `size_of` the field's type.
    pub size: usize,
    /// `type_name` of the field's type (`u32`, `f32`).
    pub ty: &'static str,
}

#[doc(hidden)]
pub fn field_of<F>(_: &F) -> (usize, &'static str) {
    (std::mem::size_of::<F>(), std::any::type_name::<F>())
}

/// `params_layout!(GemmParams { m as "M", n as "N", heads, .. })`: the [`ParamsLayout`]
/// of a `repr(C)`, `Zeroable` struct. Every field must be listed (the pattern below
/// fails to compile otherwise); `as "name"` gives the WGSL member where it is named
/// otherwise.
macro_rules! params_layout {
    ($ty:ident { $($field:ident $(as $wgsl:literal)?),* $(,)? }) => {{
        #[allow(unused)]
        fn every_field_listed(p: $ty) {
            let $ty { $($field: _),* } = p;
        }
        let zero: $ty = bytemuck::Zeroable::zeroed();
        $crate::ops::contract::ParamsLayout {
            rust_type: stringify!($ty),
            size: std::mem::size_of::<$ty>(),
            fields: vec![$({
                let (size, ty) = $crate::ops::contract::field_of(&zero.$field);
                $crate::ops::contract::FieldLayout {
                    rust_name: stringify!($field),
                    wgsl_name: params_layout!(@name $field $($wgsl)?),
                    offset: std::mem::offset_of!($ty, $field),
                    size,
                    ty,
                }
            }),*],
        }
    }};
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $wgsl:literal) => { $wgsl };
}
pub(crate) use params_layout;

/// How the bind-group layout [`crate::gpu::Gpu`] builds declares a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingSpace {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One kernel, one specialisation.
#[derive(Clone, Debug)]
pub struct KernelContract {
    /// The spec's label (`gemm_cpu_linear_wf32_b0_r0_8x5_16x8_v4`).
    pub label: String,
    /// Exactly the WGSL `Gpu::pipeline` hands wgpu: the prelude, then the family's text
    /// (or what its generator makes of it).
    pub source: String,
    pub entry: String,
    /// The WGSL struct bound at binding 0 (`Params`) and its Rust mirror.
    pub wgsl_struct: &'static str,
    pub params: ParamsLayout,
    /// The bind-group layout `Gpu::pipeline` builds for this text (group 0), in
    /// binding order: from `declared_bindings`, its own reading of the WGSL.
    pub layout: Vec<(u32, BindingSpace)>,
    /// The bind group `Gpu::dispatch` builds: the params block at binding 0, bound with
    /// `params_bytes` bytes, then the dispatch's `storage_buffers` buffers at bindings
    /// 1 ..= storage_buffers, in order.
    pub params_bytes: u64,
    pub storage_buffers: usize,
}

impl KernelContract {
    /// `storage_buffers`: how many buffers the op that runs this kernel passes to
    /// `Gpu::dispatch` (counted from its call site).
    pub(crate) fn new(spec: &KernelSpec, params: ParamsLayout, storage_buffers: usize) -> Self {
        let source = spec.wgsl();
        let layout = declared_bindings(&source)
            .into_iter()
            .map(|(b, kind)| {
                let space = match kind {
                    BindingKind::Uniform => BindingSpace::Uniform,
                    BindingKind::Read => BindingSpace::StorageRead,
                    BindingKind::ReadWrite => BindingSpace::StorageReadWrite,
                };
                (b, space)
            })
            .collect();
        KernelContract {
            label: spec.label.clone(),
            source,
            entry: spec.entry.to_string(),
            wgsl_struct: "Params",
            params,
            layout,
            params_bytes: PARAM_STRIDE,
            storage_buffers,
        }
    }

    /// The binding numbers of the bind group `Gpu::dispatch` builds, in order.
    pub fn bind_group_entries(&self) -> Vec<u32> {
        (0..=self.storage_buffers as u32).collect()
    }
}
