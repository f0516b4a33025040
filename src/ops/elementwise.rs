//! Elementwise kernels (`shaders/elementwise.wgsl`): maps, broadcasts, GEGLU, fill,
//! concatenation, and the heads transpose attention uses.

use crate::gpu::{Gpu, KernelKey, KernelSpec, Tensor};

use super::contract::{KernelContract, ParamsLayout, params_layout};
use super::wg1d;

const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");

/// `Params` of `shaders/elementwise.wgsl`: one meaning per field, each entry point
/// reads its own (the rest stay zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ElementwiseParams {
    /// Elements written.
    pub n: u32,
    /// `map`: 0 = b of the same shape, 1 = b broadcast per row, 2 = no b.
    pub mode: u32,
    /// `map` mode 1: b's row length; `geglu`: the output's row length.
    pub row: u32,
    /// `map` mode 1: a's elements per row of b.
    pub per_batch: u32,
    /// `concat`: channels of a and of b.
    pub c1: u32,
    pub c2: u32,
    /// `fill`: the value.
    pub value: f32,
    /// `heads_transpose`: keys, keys padded to 4, heads, head size.
    pub keys: u32,
    pub keys4: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub _pad: u32,
}

/// Elementwise functions of one or two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Map {
    Add,
    Mul,
    Silu,
    Gelu,
    QuickGelu,
    /// a * scale; the scale is baked into the kernel key.
    Scale(u32),
}

impl Map {
    fn wgsl(self) -> (String, String) {
        match self {
            Map::Add => ("add".into(), "return a + b;".into()),
            Map::Mul => ("mul".into(), "return a * b;".into()),
            Map::Silu => ("silu".into(), "return silu(a);".into()),
            Map::Gelu => ("gelu".into(), "return gelu(a);".into()),
            Map::QuickGelu => ("quick_gelu".into(), "return quick_gelu(a);".into()),
            Map::Scale(bits) => (
                format!("scale_{bits:08x}"),
                format!("return a * bitcast<f32>({bits}u);"),
            ),
        }
    }
}

/// The kernel of `shaders/elementwise.wgsl`'s `entry` with `op` = `f` (the pipeline
/// cache's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct MapKernel {
    f: Map,
    entry: &'static str,
}

impl KernelKey for MapKernel {
    fn spec(&self) -> KernelSpec {
        let (name, body) = self.f.wgsl();
        KernelSpec {
            label: format!("elementwise_{}_{name}", self.entry),
            body: ELEMENTWISE.into(),
            prelude: format!("fn op(a: f32, b: f32) -> f32 {{ {body} }}"),
            common: "",
            entry: self.entry,
            trusted: false,
        }
    }
}

fn params_contract() -> ParamsLayout {
    params_layout!(ElementwiseParams {
        n,
        mode,
        row,
        per_batch,
        c1,
        c2,
        value,
        keys,
        keys4,
        heads,
        head_dim,
        _pad
    })
}

/// Every entry point, `map` with every function; each dispatch binds a, b and out.
pub(super) fn contracts() -> Vec<KernelContract> {
    let maps = [
        Map::Add,
        Map::Mul,
        Map::Silu,
        Map::Gelu,
        Map::QuickGelu,
        Map::Scale(0.125f32.to_bits()),
    ];
    let specs = maps
        .map(|f| MapKernel { f, entry: "map" })
        .into_iter()
        .chain(
            ["geglu", "fill", "concat", "heads_transpose"]
                .map(|entry| MapKernel { f: Map::Add, entry }),
        );
    specs
        .map(|key| KernelContract::new(&key.spec(), params_contract(), 3))
        .collect()
}

impl Gpu {
    pub(super) fn map_kernel(&self, f: Map, entry: &'static str) -> MapKernel {
        MapKernel { f, entry }
    }

    /// Elementwise function of one tensor.
    pub fn map(&self, x: &Tensor, f: Map) -> Tensor {
        let out = self.empty(x.shape());
        let p = ElementwiseParams {
            n: x.numel() as u32,
            mode: 2,
            ..Default::default()
        };
        self.dispatch(
            &self.map_kernel(f, "map"),
            &[x.buffer(), self.dummy(), out.buffer()],
            &p,
            wg1d(x.numel()),
        );
        out
    }

    /// Elementwise function of two tensors of the same shape.
    pub fn zip(&self, a: &Tensor, b: &Tensor, f: Map) -> Tensor {
        assert_eq!(a.shape(), b.shape(), "elementwise {f:?}");
        let out = self.empty(a.shape());
        let p = ElementwiseParams {
            n: a.numel() as u32,
            mode: 0,
            ..Default::default()
        };
        self.dispatch(
            &self.map_kernel(f, "map"),
            &[a.buffer(), b.buffer(), out.buffer()],
            &p,
            wg1d(a.numel()),
        );
        out
    }

    pub fn add(&self, a: &Tensor, b: &Tensor) -> Tensor {
        self.zip(a, b, Map::Add)
    }

    /// `a [B, .., C] (op) b [B, C]`, `b` broadcast over the middle dims
    /// (the UNet adds its time embedding to every pixel this way).
    pub fn zip_rows(&self, a: &Tensor, b: &Tensor, f: Map) -> Tensor {
        let (bn, c) = (a.dim(0), a.dim(-1));
        assert_eq!(
            b.shape(),
            &[bn, c],
            "broadcast {f:?}: {:?} against {:?}",
            a.shape(),
            b.shape()
        );
        let out = self.empty(a.shape());
        let per_batch = a.numel() / bn;
        let p = ElementwiseParams {
            n: a.numel() as u32,
            mode: 1,
            row: c as u32,
            per_batch: per_batch as u32,
            ..Default::default()
        };
        self.dispatch(
            &self.map_kernel(f, "map"),
            &[a.buffer(), b.buffer(), out.buffer()],
            &p,
            wg1d(a.numel()),
        );
        out
    }

    /// GEGLU: `x [.., 2F]` -> `x[.., :F] * gelu(x[.., F:])`.
    pub fn geglu(&self, x: &Tensor) -> Tensor {
        let f2 = x.dim(-1);
        assert_eq!(f2 % 2, 0);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = f2 / 2;
        let out = self.empty(&shape);
        let p = ElementwiseParams {
            n: out.numel() as u32,
            row: (f2 / 2) as u32,
            ..Default::default()
        };
        self.dispatch(
            &self.map_kernel(Map::Add, "geglu"),
            &[x.buffer(), self.dummy(), out.buffer()],
            &p,
            wg1d(out.numel()),
        );
        out
    }

    /// Sets every element to `value`.
    pub fn fill(&self, t: &Tensor, value: f32) {
        let spec = self.map_kernel(Map::Add, "fill");
        let p = ElementwiseParams {
            n: t.numel() as u32,
            value,
            ..Default::default()
        };
        self.dispatch(
            &spec,
            &[self.dummy(), self.dummy(), t.buffer()],
            &p,
            wg1d(t.numel()),
        );
    }

    /// Concatenation along the last (channel) dim.
    pub fn concat(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let (ca, cb) = (a.dim(-1), b.dim(-1));
        assert_eq!(
            a.shape()[..a.shape().len() - 1],
            b.shape()[..b.shape().len() - 1],
            "concat {:?} {:?}",
            a.shape(),
            b.shape()
        );
        let mut shape = a.shape().to_vec();
        *shape.last_mut().unwrap() = ca + cb;
        let out = self.empty(&shape);
        let spec = self.map_kernel(Map::Add, "concat");
        let p = ElementwiseParams {
            n: out.numel() as u32,
            c1: ca as u32,
            c2: cb as u32,
            ..Default::default()
        };
        self.dispatch(
            &spec,
            &[a.buffer(), b.buffer(), out.buffer()],
            &p,
            wg1d(out.numel()),
        );
        out
    }
}
