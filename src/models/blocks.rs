//! Building blocks shared by the UNet and the VAE, mirroring diffusers' modules
//! (`resnet.py`, `attention.py`, `attention_processor.py`, `transformer_2d.py`).

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::ops::{AttentionMaps, ConvGeom, Map};

/// `ResnetBlock2D` (time-scale-shift "default", SiLU, output scale 1).
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// 1x1 conv when channels change, run as a linear map over NHWC channels.
    pub conv_shortcut: Option<Linear>,
}

impl ResnetBlock2D {
    pub fn load(
        l: &Loader,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&l.pp("norm1"), cin, groups, eps)?,
            conv1: Conv2d::load(&l.pp("conv1"), cin, cout, 3, ConvGeom::same(3))?,
            time_emb_proj: temb
                .map(|t| Linear::load(&l.pp("time_emb_proj"), t, cout, true))
                .transpose()?,
            norm2: GroupNorm::load(&l.pp("norm2"), cout, groups, eps)?,
            conv2: Conv2d::load(&l.pp("conv2"), cout, cout, 3, ConvGeom::same(3))?,
            conv_shortcut: if cin != cout {
                Some(Linear::load_pointwise(&l.pp("conv_shortcut"), cin, cout)?)
            } else {
                None
            },
        })
    }

    /// `x [B, H, W, Cin]`, `temb_act = silu(temb) [B, T]` -> `[B, H, W, Cout]`.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, temb_act: Option<&Tensor>) -> Tensor {
        let mut out = self.forward_sliced(gpu, std::slice::from_ref(x), temb_act);
        // Not reachable from a request: `models::fit::check` refuses, before a
        // generation runs, a size or count whose UNet or VAE-encoder maps exceed a binding.
        assert_eq!(
            out.len(),
            1,
            "resnet output does not fit one binding; use forward_sliced"
        );
        out.pop().unwrap()
    }

    /// The same on a map held as channel slices (see `Gpu::conv2d_sliced`).
    pub fn forward_sliced(
        &self,
        gpu: &Gpu,
        x: &[Tensor],
        temb_act: Option<&Tensor>,
    ) -> Vec<Tensor> {
        // 1. norm1 + SiLU, conv1. Each intermediate is dropped as soon as it has been
        //    read (a shadowed binding would live to the end of the block): at 512x512 the
        //    VAE's last maps are 128-256 MiB each.
        let n1 = self.norm1.forward_sliced(gpu, x, true);
        let mut h = self.conv1.forward_sliced(gpu, &n1, None);
        drop(n1);
        // 2. + time_emb_proj(silu(temb)) broadcast over pixels (UNet maps are one slice)
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_act) {
            // UNet maps are one slice (`models::fit::check`); the VAE has no time embedding
            assert_eq!(h.len(), 1, "time embedding on a sliced map");
            let t = proj.forward(gpu, t);
            h[0] = gpu.zip_rows(&h[0], &t, Map::Add);
        }
        // 3. norm2 + SiLU (dropout is identity at inference), conv2 + shortcut
        let n2 = self.norm2.forward_sliced(gpu, &h, true);
        drop(h);
        let shortcut = match &self.conv_shortcut {
            Some(s) => gpu.conv2d_sliced(x, &s.weight, s.bias.as_ref(), ConvGeom::same(1), None),
            None => x.to_vec(),
        };
        self.conv2.forward_sliced(gpu, &n2, Some(&shortcut))
    }
}

/// `Downsample2D` with a conv: 3x3, stride 2. `padding` 1 in the UNet; the VAE encoder
/// uses 0 and pads (0, 1, 0, 1) first, i.e. one zero row/column below and right.
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn load(l: &Loader, channels: usize, padding: usize) -> Result<Self> {
        let geom = if padding == 0 {
            ConvGeom {
                stride: 2,
                pad: 0,
                pad_extra: 1,
                upsample: false,
            }
        } else {
            ConvGeom {
                stride: 2,
                pad: padding,
                pad_extra: 0,
                upsample: false,
            }
        };
        Ok(Downsample2D {
            conv: Conv2d::load(&l.pp("conv"), channels, channels, 3, geom)?,
        })
    }
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Tensor {
        self.conv.forward(gpu, x)
    }
}

/// `Upsample2D` with a conv: nearest 2x then 3x3 conv, fused (the conv reads through
/// the upsample).
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(l: &Loader, channels: usize) -> Result<Self> {
        let geom = ConvGeom {
            upsample: true,
            ..ConvGeom::same(3)
        };
        Ok(Upsample2D {
            conv: Conv2d::load(&l.pp("conv"), channels, channels, 3, geom)?,
        })
    }
    /// Upsamples 2x, or to `size` (H, W) when given (diffusers' `upsample_size`).
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, size: Option<(usize, usize)>) -> Tensor {
        match size {
            Some(s) => gpu.conv2d_upsampled_to(
                x,
                &self.conv.weight,
                self.conv.bias.as_ref(),
                self.conv.geom,
                s,
            ),
            None => self.conv.forward(gpu, x),
        }
    }

    pub fn forward_sliced(&self, gpu: &Gpu, x: &[Tensor]) -> Vec<Tensor> {
        self.conv.forward_sliced(gpu, x, None)
    }
}

/// diffusers `Attention` (self or cross): `to_q`, `to_k`, `to_v` (no bias in the UNet,
/// biased in the VAE), `to_out.0` with bias.
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn load(
        l: &Loader,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        inner: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        Ok(Attention {
            to_q: Linear::load(&l.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&l.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&l.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&l.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
        })
    }

    /// `x [B, N, C]`, `context [B, M, Cc]` (self-attention when `None`); the residual
    /// is added in `to_out`'s epilogue.
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: &Tensor,
    ) -> Tensor {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(gpu, x);
        let k = self.to_k.forward(gpu, ctx);
        let v = self.to_v.forward(gpu, ctx);
        let o = gpu.attention(&q, &k, &v, self.heads, false);
        self.to_out.forward_res(gpu, &o, residual)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each
/// after a LayerNorm and with a residual.
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    /// `ff.net.0.proj`: dim -> 2 * 4 * dim (GEGLU's hidden and gate halves).
    pub ff_proj: Linear,
    /// `ff.net.2`: 4 * dim -> dim.
    pub ff_out: Linear,
}

impl BasicTransformerBlock {
    pub fn load(l: &Loader, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let ff = l.pp("ff").pp("net");
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&l.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&l.pp("attn1"), dim, dim, heads, dim, false)?,
            norm2: LayerNorm::load(&l.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&l.pp("attn2"), dim, context_dim, heads, dim, false)?,
            norm3: LayerNorm::load(&l.pp("norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(&ff.pp(0).pp("proj"), dim, dim * 8, true)?,
            ff_out: Linear::load(&ff.pp(2), dim * 4, dim, true)?,
        })
    }

    /// `maps`: the per-word attention maps to add this block's cross-attention to, with
    /// the block's (height, width) grid.
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        context: &Tensor,
        maps: Option<(&AttentionMaps, (usize, usize))>,
    ) -> Tensor {
        // 1. self-attention
        let h = self.norm1.forward(gpu, x);
        let x = self.attn1.forward(gpu, &h, None, x);
        // 2. cross-attention on the text
        let h = self.norm2.forward(gpu, &x);
        let x = match maps {
            None => self.attn2.forward(gpu, &h, Some(context), &x),
            Some((maps, grid)) => {
                let a = &self.attn2;
                let q = a.to_q.forward(gpu, &h);
                let k = a.to_k.forward(gpu, context);
                let v = a.to_v.forward(gpu, context);
                gpu.attention_maps_add(&q, &k, a.heads, grid, maps);
                let o = gpu.attention(&q, &k, &v, a.heads, false);
                a.to_out.forward_res(gpu, &o, &x)
            }
        };
        // 3. feed-forward (GEGLU)
        let h = self.norm3.forward(gpu, &x);
        let h = gpu.geglu(&self.ff_proj.forward(gpu, &h));
        self.ff_out.forward_res(gpu, &h, &x)
    }
}

/// `Transformer2DModel` over an NHWC map: GroupNorm (eps 1e-6), `proj_in` (1x1 conv,
/// or linear with `use_linear_projection`, the same map over channels in NHWC),
/// transformer blocks on the `H*W` tokens, `proj_out`, residual.
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Linear,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Linear,
}

impl Transformer2DModel {
    pub fn load(
        l: &Loader,
        channels: usize,
        context_dim: usize,
        heads: usize,
        layers: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&l.pp("norm"), channels, groups, 1e-6)?,
            proj_in: Linear::load_pointwise(&l.pp("proj_in"), channels, channels)?,
            transformer_blocks: (0..layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &l.pp("transformer_blocks").pp(i),
                        channels,
                        context_dim,
                        heads,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: Linear::load_pointwise(&l.pp("proj_out"), channels, channels)?,
        })
    }

    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        context: &Tensor,
        maps: Option<&AttentionMaps>,
    ) -> Tensor {
        let [b, h, w, c] = x.shape().try_into().unwrap();
        let t = self.norm.forward(gpu, x, false).reshape(&[b, h * w, c]);
        let mut t = self.proj_in.forward(gpu, &t);
        for block in &self.transformer_blocks {
            t = block.forward(gpu, &t, context, maps.map(|m| (m, (h, w))));
        }
        self.proj_out
            .forward_res(gpu, &t, &x.reshape(&[b, h * w, c]))
            .reshape(&[b, h, w, c])
    }
}

/// The VAE's single-head spatial self-attention (diffusers `Attention` with a
/// `group_norm`, biased projections, residual). Old checkpoints name the projections
/// `query`/`key`/`value`/`proj_attn`; the loader reads either.
pub struct VaeAttention {
    pub group_norm: GroupNorm,
    pub attn: Attention,
}

impl VaeAttention {
    pub fn load(l: &Loader, channels: usize, groups: usize) -> Result<Self> {
        let group_norm = GroupNorm::load(&l.pp("group_norm"), channels, groups, 1e-6)?;
        let attn = if l.contains("query.weight") {
            Attention {
                to_q: Linear::load_pointwise(&l.pp("query"), channels, channels)?,
                to_k: Linear::load_pointwise(&l.pp("key"), channels, channels)?,
                to_v: Linear::load_pointwise(&l.pp("value"), channels, channels)?,
                to_out: Linear::load_pointwise(&l.pp("proj_attn"), channels, channels)?,
                heads: 1,
            }
        } else {
            Attention::load(l, channels, channels, 1, channels, true)?
        };
        Ok(VaeAttention { group_norm, attn })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Tensor {
        let [b, h, w, c] = x.shape().try_into().unwrap();
        let t = self
            .group_norm
            .forward(gpu, x, false)
            .reshape(&[b, h * w, c]);
        let q = self.attn.to_q.forward(gpu, &t);
        let k = self.attn.to_k.forward(gpu, &t);
        let v = self.attn.to_v.forward(gpu, &t);
        let o = gpu.attention(&q, &k, &v, 1, false);
        self.attn
            .to_out
            .forward_res(gpu, &o, &x.reshape(&[b, h * w, c]))
            .reshape(&[b, h, w, c])
    }
}
