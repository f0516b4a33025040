//! Tensor operations, each one dispatch of a kernel from `shaders/`.
//!
//! Shapes follow the engine's layouts: feature maps NHWC `[B, H, W, C]`, token
//! sequences `[B, T, C]`. Weights keep PyTorch's `[out, in]` for linear layers and are
//! reordered to `[Cout, KH, KW, Cin]` for convolutions at load (see `nn::Conv2d`).

use crate::gpu::{Gpu, KernelSpec, Tensor, Weight};

const GEMM: &str = include_str!("../shaders/gemm.wgsl");
const ATTENTION: &str = include_str!("../shaders/attention.wgsl");
const NORM: &str = include_str!("../shaders/norm.wgsl");
const ELEMENTWISE: &str = include_str!("../shaders/elementwise.wgsl");

/// Geometry of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub stride: usize,
    /// Zero padding above and to the left; below and to the right follows from the
    /// output size (diffusers' VAE encoder pads only bottom/right before its stride-2 convs).
    pub pad: usize,
    /// Extra zero padding below/right beyond `pad` (asymmetric padding).
    pub pad_extra: usize,
    /// Read the input through a nearest-neighbour 2x upsample.
    pub upsample: bool,
}

impl ConvGeom {
    pub fn same(k: usize) -> ConvGeom {
        ConvGeom { stride: 1, pad: k / 2, pad_extra: 0, upsample: false }
    }
}

/// Elementwise functions of one or two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            Map::Scale(bits) => (format!("scale_{bits:08x}"), format!("return a * bitcast<f32>({bits}u);")),
        }
    }
}

fn wg1d(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(256) as u32;
    if groups <= 65535 { [groups, 1, 1] } else { [65535, groups.div_ceil(65535), 1] }
}

impl Gpu {
    fn gemm(
        &self,
        mode: &str,
        x: &Tensor,
        w: &Weight,
        bias: Option<&Weight>,
        res: Option<&Tensor>,
        params: &[u32],
        m: usize,
        n: usize,
        out_shape: &[usize],
    ) -> Tensor {
        let k = params[2] as u64;
        self.count_flops(2 * m as u64 * n as u64 * k);
        let out = self.empty(out_shape);
        let key = format!("gemm_{mode}_w{}_b{}_r{}_64x64", w.format.name(), bias.is_some() as u8, res.is_some() as u8);
        let prelude = format!(
            "const HAS_BIAS: bool = {};\nconst HAS_RES: bool = {};\nfn load_a(m: u32, k: u32) -> f32 {{ return load_a_{mode}(m, k); }}\n{}",
            bias.is_some(),
            res.is_some(),
            w.format.wgsl(2)
        );
        let spec = KernelSpec { key, source: GEMM, prelude, entry: "main" };
        let dummy = self.dummy();
        self.dispatch(
            &spec,
            &[
                x.buffer(),
                w.buffer(),
                bias.map(|b| b.buffer()).unwrap_or(dummy),
                res.map(|r| r.buffer()).unwrap_or(dummy),
                out.buffer(),
            ],
            params,
            [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
        );
        out
    }

    /// `x [.., K] · wᵀ (+ bias) (+ res)` with `w [N, K]` as PyTorch stores `nn.Linear`.
    pub fn linear(&self, x: &Tensor, w: &Weight, bias: Option<&Weight>, res: Option<&Tensor>) -> Tensor {
        let k = x.dim(-1);
        let (n, wk) = (w.shape[0], w.shape[1]);
        assert_eq!(k, wk, "linear: input {:?} against weight {:?}", x.shape(), w.shape);
        let m = x.numel() / k;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().unwrap() = n;
        if let Some(r) = res {
            assert_eq!(r.shape(), &out_shape[..], "linear residual");
        }
        let mut p = [0u32; 16];
        p[0] = m as u32;
        p[1] = n as u32;
        p[2] = k as u32;
        self.gemm("linear", x, w, bias, res, &p, m, n, &out_shape)
    }

    /// 2-D convolution of an NHWC map with `w [Cout, KH, KW, Cin]`.
    pub fn conv2d(&self, x: &Tensor, w: &Weight, bias: Option<&Weight>, g: ConvGeom, res: Option<&Tensor>) -> Tensor {
        let [b, h, wd, c] = x.shape().try_into().expect("conv2d input must be [B, H, W, C]");
        let [cout, kh, kw, cin] = w.shape[..].try_into().expect("conv2d weight must be [Cout, KH, KW, Cin]");
        assert_eq!(c, cin, "conv2d: input {:?} against weight {:?}", x.shape(), w.shape);
        let up = if g.upsample { 2 } else { 1 };
        let (lh, lw) = (h * up, wd * up);
        let oh = (lh + 2 * g.pad + g.pad_extra - kh) / g.stride + 1;
        let ow = (lw + 2 * g.pad + g.pad_extra - kw) / g.stride + 1;
        let out_shape = [b, oh, ow, cout];
        if let Some(r) = res {
            assert_eq!(r.shape(), &out_shape[..], "conv2d residual");
        }
        let m = b * oh * ow;
        let k = kh * kw * cin;
        let p: [u32; 16] = [
            m as u32,
            cout as u32,
            k as u32,
            0,
            h as u32,
            wd as u32,
            cin as u32,
            kw as u32,
            oh as u32,
            ow as u32,
            g.stride as u32,
            g.pad as u32,
            g.pad as u32,
            up as u32,
            0,
            0,
        ];
        self.gemm("conv", x, w, bias, res, &p, m, cout, &out_shape)
    }

    /// GroupNorm over an NHWC map (or `[B, P, C]`), optionally followed by SiLU.
    pub fn group_norm(&self, x: &Tensor, groups: usize, gamma: &Weight, beta: &Weight, eps: f32, silu: bool) -> Tensor {
        let b = x.dim(0);
        let c = x.dim(-1);
        assert_eq!(c % groups, 0, "group_norm: {c} channels in {groups} groups");
        let pixels = x.numel() / (b * c);
        let out = self.empty(x.shape());
        let spec = KernelSpec {
            key: format!("group_norm_silu{}", silu as u8),
            source: NORM,
            prelude: format!("const SILU: bool = {silu};"),
            entry: "group_norm",
        };
        let p = [pixels as u32, c as u32, groups as u32, 0, eps.to_bits(), 0, 0, 0];
        self.dispatch(&spec, &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()], &p, [groups as u32, b as u32, 1]);
        out
    }

    /// LayerNorm over the last dim.
    pub fn layer_norm(&self, x: &Tensor, gamma: &Weight, beta: &Weight, eps: f32) -> Tensor {
        let c = x.dim(-1);
        let rows = x.numel() / c;
        let out = self.empty(x.shape());
        let spec = KernelSpec { key: "layer_norm".into(), source: NORM, prelude: "const SILU: bool = false;".into(), entry: "layer_norm" };
        let p = [rows as u32, c as u32, 1, 0, eps.to_bits(), 0, 0, 0];
        let wg = if rows <= 65535 { [rows as u32, 1, 1] } else { [65535, rows.div_ceil(65535) as u32, 1] };
        self.dispatch(&spec, &[x.buffer(), gamma.buffer(), beta.buffer(), out.buffer()], &p, wg);
        out
    }

    /// Multi-head attention without materialising scores. `q [B, Nq, H*D]`,
    /// `k, v [B, Nk, H*D]` -> `[B, Nq, H*D]`, scale `1/sqrt(D)`.
    pub fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Tensor {
        let [b, nq, cq] = q.shape().try_into().expect("attention q must be [B, N, C]");
        let [bk, nk, ck] = k.shape().try_into().expect("attention k must be [B, N, C]");
        assert_eq!(k.shape(), v.shape(), "attention k/v");
        assert_eq!((b, cq), (bk, ck), "attention q {:?} k {:?}", q.shape(), k.shape());
        assert_eq!(cq % heads, 0, "attention: {cq} channels in {heads} heads");
        let d = cq / heads;
        // Two K/V tiles of BK x D f32 within 16 KiB of workgroup memory.
        let bk_tile = (2048 / d).clamp(1, 64);
        let bk_tile = 1usize << (usize::BITS - 1 - bk_tile.leading_zeros());
        let out = self.empty(&[b, nq, cq]);
        let spec = KernelSpec {
            key: format!("attention_d{d}_bk{bk_tile}"),
            source: ATTENTION,
            prelude: format!("const D: u32 = {d}u;\nconst BK: u32 = {bk_tile}u;"),
            entry: "main",
        };
        self.count_flops(4 * (b * heads * nq * nk * d) as u64);
        let scale = 1.0 / (d as f32).sqrt();
        let p = [nq as u32, nk as u32, heads as u32, cq as u32, ck as u32, causal as u32, scale.to_bits(), 0];
        self.dispatch(&spec, &[q.buffer(), k.buffer(), v.buffer(), out.buffer()], &p, [nq.div_ceil(64) as u32, heads as u32, b as u32]);
        out
    }

    fn map_kernel(&self, f: Map, entry: &'static str) -> KernelSpec<'static> {
        let (name, body) = f.wgsl();
        KernelSpec {
            key: format!("elementwise_{entry}_{name}"),
            source: ELEMENTWISE,
            prelude: format!("fn op(a: f32, b: f32) -> f32 {{ {body} }}"),
            entry,
        }
    }

    /// Elementwise function of one tensor.
    pub fn map(&self, x: &Tensor, f: Map) -> Tensor {
        let out = self.empty(x.shape());
        let p = [x.numel() as u32, 0, 0, 2, 0, 0, 0, 0];
        self.dispatch(&self.map_kernel(f, "map"), &[x.buffer(), self.dummy(), out.buffer()], &p, wg1d(x.numel()));
        out
    }

    /// Elementwise function of two tensors of the same shape.
    pub fn zip(&self, a: &Tensor, b: &Tensor, f: Map) -> Tensor {
        assert_eq!(a.shape(), b.shape(), "elementwise {f:?}");
        let out = self.empty(a.shape());
        let p = [a.numel() as u32, 0, 0, 0, 0, 0, 0, 0];
        self.dispatch(&self.map_kernel(f, "map"), &[a.buffer(), b.buffer(), out.buffer()], &p, wg1d(a.numel()));
        out
    }

    pub fn add(&self, a: &Tensor, b: &Tensor) -> Tensor {
        self.zip(a, b, Map::Add)
    }

    /// `a [B, .., C] (op) b [B, C]`, `b` broadcast over the middle dims
    /// (the UNet adds its time embedding to every pixel this way).
    pub fn zip_rows(&self, a: &Tensor, b: &Tensor, f: Map) -> Tensor {
        let (bn, c) = (a.dim(0), a.dim(-1));
        assert_eq!(b.shape(), &[bn, c], "broadcast {f:?}: {:?} against {:?}", a.shape(), b.shape());
        let out = self.empty(a.shape());
        let per_batch = a.numel() / bn;
        let p = [a.numel() as u32, c as u32, per_batch as u32, 1, 0, 0, 0, 0];
        self.dispatch(&self.map_kernel(f, "map"), &[a.buffer(), b.buffer(), out.buffer()], &p, wg1d(a.numel()));
        out
    }

    /// GEGLU: `x [.., 2F]` -> `x[.., :F] * gelu(x[.., F:])`.
    pub fn geglu(&self, x: &Tensor) -> Tensor {
        let f2 = x.dim(-1);
        assert_eq!(f2 % 2, 0);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = f2 / 2;
        let out = self.empty(&shape);
        let p = [out.numel() as u32, (f2 / 2) as u32, 0, 0, 0, 0, 0, 0];
        self.dispatch(&self.map_kernel(Map::Add, "geglu"), &[x.buffer(), self.dummy(), out.buffer()], &p, wg1d(out.numel()));
        out
    }

    /// Sets every element to `value`.
    pub fn fill(&self, t: &Tensor, value: f32) {
        let spec = self.map_kernel(Map::Add, "fill");
        let p = [t.numel() as u32, 0, 0, 0, value.to_bits(), 0, 0, 0];
        self.dispatch(&spec, &[self.dummy(), self.dummy(), t.buffer()], &p, wg1d(t.numel()));
    }

    /// Concatenation along the last (channel) dim.
    pub fn concat(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let (ca, cb) = (a.dim(-1), b.dim(-1));
        assert_eq!(a.shape()[..a.shape().len() - 1], b.shape()[..b.shape().len() - 1], "concat {:?} {:?}", a.shape(), b.shape());
        let mut shape = a.shape().to_vec();
        *shape.last_mut().unwrap() = ca + cb;
        let out = self.empty(&shape);
        let spec = self.map_kernel(Map::Add, "concat");
        let p = [out.numel() as u32, 0, 0, 0, ca as u32, cb as u32, 0, 0];
        self.dispatch(&spec, &[a.buffer(), b.buffer(), out.buffer()], &p, wg1d(out.numel()));
        out
    }
}

