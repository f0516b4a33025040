//! Normalisations (`shaders/norm.wgsl`, `shaders/rows_subgroup.wgsl`): GroupNorm (+SiLU),
//! LayerNorm, and the row kernels attention's softmax shares.

use crate::gpu::{Gpu, KernelKey, KernelPath, KernelSpec, Tensor, Weight};

use super::contract::{KernelContract, ParamsLayout, params_layout};
use super::grid;

const NORM: &str = include_str!("../../shaders/norm.wgsl");

/// The row kernels [`Gpu::dispatch_rows`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum RowKernel {
    LayerNorm,
    /// In-place softmax of attention score rows.
    Softmax,
}

/// `Params` of `shaders/norm.wgsl` and `shaders/rows_subgroup.wgsl` (one meaning per
/// field; each kernel reads its own fields, the rest stay zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct NormParams {
    /// GroupNorm, LayerNorm.
    pub eps: f32,
    /// GroupNorm: pixels per image.
    pub pixels: u32,
    /// GroupNorm: channels of this map (slice).
    pub channels: u32,
    /// GroupNorm: groups in this map.
    pub groups: u32,
    /// GroupNorm: this map's first channel in gamma/beta.
    pub c_off: u32,
    /// LayerNorm, softmax: rows.
    pub rows: u32,
    /// LayerNorm: row length; softmax: keys.
    pub cols: u32,
    /// Softmax: row stride (keys padded to a multiple of 4).
    pub stride: u32,
    /// Softmax: 1 = mask keys after the query.
    pub causal: u32,
    /// Softmax: scores are multiplied by this first.
    pub scale: f32,
    /// Softmax: queries per chunk (row r holds query q0 + r % q_chunk).
    pub q_chunk: u32,
    pub q0: u32,
}
const ROWS_SUBGROUP: &str = include_str!("../../shaders/rows_subgroup.wgsl");

/// GroupNorm's kernel: the barrier-free form (`serial`) or a workgroup per group (the
/// pipeline cache's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GroupNormKernel {
    serial: bool,
    silu: bool,
}

impl KernelKey for GroupNormKernel {
    fn spec(&self) -> KernelSpec {
        let entry = if self.serial {
            "group_norm_serial"
        } else {
            "group_norm"
        };
        KernelSpec {
            label: format!("{entry}_silu{}", self.silu as u8),
            body: NORM.into(),
            prelude: format!("const SILU: bool = {};", self.silu),
            common: "",
            entry,
            trusted: false,
        }
    }
}

/// A row kernel in `path`'s form (see [`Gpu::dispatch_rows`]; the pipeline cache's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RowsKernel {
    kernel: RowKernel,
    path: KernelPath,
}

impl KernelKey for RowsKernel {
    fn spec(&self) -> KernelSpec {
        let (subgroup, workgroup, serial) = match self.kernel {
            RowKernel::LayerNorm => ("layer_norm", "layer_norm", "layer_norm_serial"),
            RowKernel::Softmax => ("softmax", "softmax_rows", "softmax_rows_serial"),
        };
        match self.path {
            KernelPath::Subgroup(sg) => KernelSpec {
                label: format!("{subgroup}_sg{sg}"),
                body: ROWS_SUBGROUP.into(),
                prelude: format!("const SG: u32 = {sg}u;"),
                common: "",
                entry: subgroup,
                trusted: false,
            },
            path => {
                let entry = if path == KernelPath::CpuDriver {
                    serial
                } else {
                    workgroup
                };
                KernelSpec {
                    label: entry.into(),
                    body: NORM.into(),
                    prelude: "const SILU: bool = false;".into(),
                    common: "",
                    entry,
                    trusted: false,
                }
            }
        }
    }
}

fn params_contract() -> ParamsLayout {
    params_layout!(NormParams {
        eps,
        pixels,
        channels,
        groups,
        c_off,
        rows,
        cols,
        stride,
        causal,
        scale,
        q_chunk,
        q0
    })
}

/// GroupNorm (+SiLU) in both forms, the row kernels in every path's form (subgroups
/// of 16 and 32); each dispatch binds x, gamma, beta and out (softmax: dummies, then
/// the scores).
pub(super) fn contracts() -> Vec<KernelContract> {
    let mut specs = Vec::new();
    for serial in [false, true] {
        for silu in [false, true] {
            specs.push(GroupNormKernel { serial, silu }.spec());
        }
    }
    for kernel in [RowKernel::LayerNorm, RowKernel::Softmax] {
        // every subgroup size the row kernels take (4 to ROWS_MAX_SUBGROUP)
        for path in [
            KernelPath::Subgroup(4),
            KernelPath::Subgroup(8),
            KernelPath::Subgroup(16),
            KernelPath::Subgroup(32),
            KernelPath::Subgroup(64),
            KernelPath::CpuDriver,
            KernelPath::Tiled,
        ] {
            specs.push(RowsKernel { kernel, path }.spec());
        }
    }
    specs
        .iter()
        .map(|spec| KernelContract::new(spec, params_contract(), 4))
        .collect()
}

impl Gpu {
    /// GroupNorm over an NHWC map (or `[B, P, C]`), optionally followed by SiLU.
    pub fn group_norm(
        &self,
        x: &Tensor,
        groups: usize,
        gamma: &Weight,
        beta: &Weight,
        eps: f32,
        silu: bool,
    ) -> Tensor {
        self.group_norm_sliced(std::slice::from_ref(x), groups, gamma, beta, eps, silu)
            .pop()
            .unwrap()
    }

    /// GroupNorm of a map held as channel slices (see [`Gpu::conv2d_sliced`]); each
    /// slice holds whole groups.
    pub fn group_norm_sliced(
        &self,
        xs: &[Tensor],
        groups: usize,
        gamma: &Weight,
        beta: &Weight,
        eps: f32,
        silu: bool,
    ) -> Vec<Tensor> {
        let c: usize = xs.iter().map(|x| x.dim(-1)).sum();
        assert_eq!(c % groups, 0, "group_norm: {c} channels in {groups} groups");
        let per_group = c / groups;
        // CPU drivers without subgroups: the barrier-free form (shaders/norm.wgsl).
        let serial = self.info.path == KernelPath::CpuDriver;
        let spec = GroupNormKernel { serial, silu };
        let mut c0 = 0;
        xs.iter()
            .map(|x| {
                let (b, cx) = (x.dim(0), x.dim(-1));
                assert_eq!(
                    cx % per_group,
                    0,
                    "group_norm: a slice of {cx} channels splits groups of {per_group}"
                );
                let pixels = x.numel() / (b * cx);
                let out = self.empty(x.shape());
                let g = cx / per_group;
                let p = NormParams {
                    eps,
                    pixels: pixels as u32,
                    channels: cx as u32,
                    groups: g as u32,
                    c_off: c0 as u32,
                    ..Default::default()
                };
                self.dispatch(
                    &spec,
                    &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()],
                    &p,
                    [if serial { g.div_ceil(4) } else { g } as u32, b as u32, 1],
                );
                c0 += cx;
                out
            })
            .collect()
    }

    /// LayerNorm over the last dim.
    pub fn layer_norm(&self, x: &Tensor, gamma: &Weight, beta: &Weight, eps: f32) -> Tensor {
        let c = x.dim(-1);
        let rows = x.numel() / c;
        let out = self.empty(x.shape());
        let bindings = [x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()];
        let p = NormParams {
            eps,
            rows: rows as u32,
            cols: c as u32,
            ..Default::default()
        };
        self.dispatch_rows(RowKernel::LayerNorm, &bindings, &p, rows);
        out
    }

    /// A row kernel in this adapter's form: a subgroup per row
    /// (`shaders/rows_subgroup.wgsl`), a row per invocation without barriers on CPU
    /// drivers, a workgroup per row elsewhere (`shaders/norm.wgsl`).
    pub(super) fn dispatch_rows(
        &self,
        kernel: RowKernel,
        bindings: &[&wgpu::Buffer],
        p: &NormParams,
        rows: usize,
    ) {
        let path = self.info.path_for(crate::gpu::ROWS_MAX_SUBGROUP);
        let spec = RowsKernel { kernel, path };
        let groups = match path {
            KernelPath::Subgroup(sg) => grid(rows.div_ceil(64 / sg as usize)),
            KernelPath::CpuDriver => grid(rows.div_ceil(64)),
            KernelPath::Tiled => grid(rows),
        };
        self.dispatch(&spec, bindings, p, groups);
    }
}
