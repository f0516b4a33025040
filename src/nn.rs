//! Layers that hold weights: each is loaded from the tensors under its checkpoint name
//! and runs one or two kernels.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor, Weight};
use crate::loader::Loader;
use crate::ops::ConvGeom;

/// `nn.Linear`: `weight [out, in]`, optional `bias [out]`.
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Weight>,
}

impl Linear {
    pub fn load(l: &Loader, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let weight = l.matrix("weight", &[out_dim, in_dim], None, false)?;
        let bias = if bias {
            Some(l.vector("bias", out_dim)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A 1x1 `nn.Conv2d` or an `nn.Linear` (SD 2.x's `use_linear_projection`) as one
    /// linear map over the channels of an NHWC map.
    pub fn load_pointwise(l: &Loader, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let weight = l.matrix(
            "weight",
            &[out_dim, in_dim],
            Some(&[out_dim, in_dim, 1, 1]),
            false,
        )?;
        let mut weight = weight;
        weight.shape = vec![out_dim, in_dim];
        Ok(Linear {
            weight,
            bias: Some(l.vector("bias", out_dim)?),
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Tensor {
        gpu.linear(x, &self.weight, self.bias.as_ref(), None)
    }

    /// `forward(x) + res`, fused into the GEMM's epilogue.
    pub fn forward_res(&self, gpu: &Gpu, x: &Tensor, res: &Tensor) -> Tensor {
        gpu.linear(x, &self.weight, self.bias.as_ref(), Some(res))
    }
}

/// `nn.Conv2d` over NHWC maps.
pub struct Conv2d {
    pub weight: Weight,
    pub bias: Option<Weight>,
    pub geom: ConvGeom,
}

impl Conv2d {
    pub fn load(l: &Loader, cin: usize, cout: usize, k: usize, geom: ConvGeom) -> Result<Conv2d> {
        let weight = l.matrix("weight", &[cout, cin, k, k], None, true)?;
        Ok(Conv2d {
            weight,
            bias: Some(l.vector("bias", cout)?),
            geom,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Tensor {
        gpu.conv2d(x, &self.weight, self.bias.as_ref(), self.geom, None)
    }

    pub fn forward_res(&self, gpu: &Gpu, x: &Tensor, res: &Tensor) -> Tensor {
        gpu.conv2d(x, &self.weight, self.bias.as_ref(), self.geom, Some(res))
    }

    /// On maps held as channel slices (see `Gpu::conv2d_sliced`).
    pub fn forward_sliced(&self, gpu: &Gpu, x: &[Tensor], res: Option<&[Tensor]>) -> Vec<Tensor> {
        gpu.conv2d_sliced(x, &self.weight, self.bias.as_ref(), self.geom, res)
    }
}

pub struct GroupNorm {
    pub weight: Weight,
    pub bias: Weight,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(l: &Loader, channels: usize, groups: usize, eps: f32) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::Error::Input(format!(
                "{}: {channels} channels cannot be split in {groups} groups (norm_num_groups in config.json)",
                l.name("")
            )));
        }
        Ok(GroupNorm {
            weight: l.vector("weight", channels)?,
            bias: l.vector("bias", channels)?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor, silu: bool) -> Tensor {
        gpu.group_norm(x, self.groups, &self.weight, &self.bias, self.eps, silu)
    }

    pub fn forward_sliced(&self, gpu: &Gpu, x: &[Tensor], silu: bool) -> Vec<Tensor> {
        gpu.group_norm_sliced(x, self.groups, &self.weight, &self.bias, self.eps, silu)
    }
}

pub struct LayerNorm {
    pub weight: Weight,
    pub bias: Weight,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(l: &Loader, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: l.vector("weight", dim)?,
            bias: l.vector("bias", dim)?,
            eps,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Tensor {
        gpu.layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A prompt's input embeddings, gathered on the CPU (the embedding tables stay there):
/// `ids [B][T]`, rows of one length of 1 to `positions` tokens, every id below `vocab`;
/// element `(row, position, k)` of the `[B, T, d]` result is `value(id, position, k)`.
/// Returns the values, B and T.
pub(crate) fn gather_embeddings(
    ids: &[Vec<u32>],
    positions: usize,
    vocab: usize,
    d: usize,
    value: impl Fn(usize, usize, usize) -> f32,
) -> Result<(Vec<f32>, usize, usize)> {
    let b = ids.len();
    let t = ids.first().map_or(0, |r| r.len());
    if t == 0 || t > positions || ids.iter().any(|r| r.len() != t) {
        return Err(Error::Shape(format!(
            "text encoder input must be {b} rows of the same length 1..={positions} tokens"
        )));
    }
    let mut x = vec![0f32; b * t * d];
    for (bi, row) in ids.iter().enumerate() {
        for (ti, &id) in row.iter().enumerate() {
            let id = id as usize;
            if id >= vocab {
                return Err(Error::Shape(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            let o = (bi * t + ti) * d;
            for k in 0..d {
                x[o + k] = value(id, ti, k);
            }
        }
    }
    Ok((x, b, t))
}
