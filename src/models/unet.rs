//! `diffusers.UNet2DConditionModel` (SD 1.x / 2.x), built from its `config.json`.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::models::blocks::{Downsample2D, ResnetBlock2D, Transformer2DModel, Upsample2D};
use crate::models::config::UNetConfig;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::ops::{AttentionMaps, ConvGeom, Map};

pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

/// A down block: `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D`.
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub downsampler: Option<Downsample2D>,
}

/// An up block: `CrossAttnUpBlock2D` or `UpBlock2D`.
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub upsampler: Option<Upsample2D>,
}

pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

pub struct UNet2DConditionModel {
    pub config: UNetConfig,
    pub time_embedding: TimestepEmbedding,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// Intermediate outputs, for parity tests against diffusers' hooks.
#[derive(Default)]
pub struct UNetTrace {
    pub time_emb: Option<Tensor>,
    pub conv_in: Option<Tensor>,
    pub down: Vec<Tensor>,
    pub mid: Option<Tensor>,
    pub up: Vec<Tensor>,
    pub conv_norm_out: Option<Tensor>,
}

/// diffusers `get_timestep_embedding`, computed in f32 as torch does:
/// `exp(-ln(10000) * i / (half - shift))`, times `t`, `[sin, cos]` (flipped to
/// `[cos, sin]` with `flip_sin_to_cos`).
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f32,
) -> Vec<f32> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - shift);
                t * exponent.exp()
            })
            .collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            out.extend(cos.iter().chain(&sin));
        } else {
            out.extend(sin.iter().chain(&cos));
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

impl UNet2DConditionModel {
    pub fn load(l: &Loader, config: UNetConfig) -> Result<Self> {
        let c = &config;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let (groups, eps) = (c.norm_num_groups, c.norm_eps);
        let time_embedding = TimestepEmbedding {
            linear_1: Linear::load(&l.pp("time_embedding").pp("linear_1"), ch[0], temb, true)?,
            linear_2: Linear::load(&l.pp("time_embedding").pp("linear_2"), temb, temb, true)?,
        };
        let conv_in = Conv2d::load(&l.pp("conv_in"), c.in_channels, ch[0], 3, ConvGeom::same(3))?;

        // 1. down blocks
        let mut down_blocks = Vec::new();
        let mut out_ch = ch[0];
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let lb = l.pp("down_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = ch[i];
            let cross = kind == "CrossAttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block.get(i) {
                let cin = if j == 0 { in_ch } else { out_ch };
                resnets.push(ResnetBlock2D::load(
                    &lb.pp("resnets").pp(j),
                    cin,
                    out_ch,
                    Some(temb),
                    groups,
                    eps,
                )?);
                if cross {
                    attentions.push(Transformer2DModel::load(
                        &lb.pp("attentions").pp(j),
                        out_ch,
                        c.cross_attention_dim,
                        c.heads(i),
                        c.transformer_layers_per_block.get(i),
                        groups,
                    )?);
                }
            }
            let downsampler = if i + 1 < n {
                Some(Downsample2D::load(
                    &lb.pp("downsamplers").pp(0),
                    out_ch,
                    c.downsample_padding,
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        // 2. mid block
        let lm = l.pp("mid_block");
        let top = ch[n - 1];
        let mid_block = MidBlock {
            resnets: (0..2)
                .map(|j| {
                    ResnetBlock2D::load(&lm.pp("resnets").pp(j), top, top, Some(temb), groups, eps)
                })
                .collect::<Result<_>>()?,
            attentions: vec![Transformer2DModel::load(
                &lm.pp("attentions").pp(0),
                top,
                c.cross_attention_dim,
                c.heads(n - 1),
                c.transformer_layers_per_block.get(n - 1),
                groups,
            )?],
        };

        // 3. up blocks (channels, heads and layer counts reversed)
        let mut up_blocks = Vec::new();
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut prev_out = rev[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let lb = l.pp("up_blocks").pp(i);
            let out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let rb = n - 1 - i; // the matching down block
            let layers = c.layers_per_block.get(rb) + 1;
            let cross = kind == "CrossAttnUpBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let cin = if j == 0 { prev_out } else { out_ch };
                resnets.push(ResnetBlock2D::load(
                    &lb.pp("resnets").pp(j),
                    cin + skip,
                    out_ch,
                    Some(temb),
                    groups,
                    eps,
                )?);
                if cross {
                    attentions.push(Transformer2DModel::load(
                        &lb.pp("attentions").pp(j),
                        out_ch,
                        c.cross_attention_dim,
                        c.heads(rb),
                        c.transformer_layers_per_block.get(rb),
                        groups,
                    )?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(Upsample2D::load(&lb.pp("upsamplers").pp(0), out_ch)?)
            } else {
                None
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
            prev_out = out_ch;
        }

        Ok(UNet2DConditionModel {
            conv_norm_out: GroupNorm::load(&l.pp("conv_norm_out"), ch[0], groups, eps)?,
            conv_out: Conv2d::load(
                &l.pp("conv_out"),
                ch[0],
                c.out_channels,
                3,
                ConvGeom::same(3),
            )?,
            config,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
        })
    }

    /// One denoising call. `sample [B, H, W, 4]` (NHWC), `timestep` for the whole
    /// batch, `context [B, 77, D]` -> predicted noise `[B, H, W, 4]`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        timestep: f32,
        context: &Tensor,
    ) -> Result<Tensor> {
        self.forward_traced(gpu, sample, timestep, context, None)
    }

    pub fn forward_traced(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        timestep: f32,
        context: &Tensor,
        trace: Option<&mut UNetTrace>,
    ) -> Result<Tensor> {
        self.forward_full(gpu, sample, timestep, context, trace, None)
    }

    /// One call that also adds its cross-attention maps to `maps`
    /// ([`AttentionMaps`]).
    pub fn forward_mapped(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        timestep: f32,
        context: &Tensor,
        maps: &AttentionMaps,
    ) -> Result<Tensor> {
        self.forward_full(gpu, sample, timestep, context, None, Some(maps))
    }

    fn forward_full(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        timestep: f32,
        context: &Tensor,
        mut trace: Option<&mut UNetTrace>,
        maps: Option<&AttentionMaps>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b = sample.dim(0);
        // 1. time embedding (sinusoid on the CPU: B x 320 numbers)
        let temb_in = timestep_embedding(
            &vec![timestep; b],
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift as f32,
        );
        let temb_in = gpu.upload(&temb_in, &[b, c.block_out_channels[0]])?;
        let h = gpu.map(
            &self.time_embedding.linear_1.forward(gpu, &temb_in),
            Map::Silu,
        );
        let temb = self.time_embedding.linear_2.forward(gpu, &h);
        // Every resnet projects silu(temb): compute it once.
        let temb_act = gpu.map(&temb, Map::Silu);

        // 2. conv_in
        let mut x = self.conv_in.forward(gpu, sample);
        if let Some(t) = trace.as_deref_mut() {
            t.time_emb = Some(temb.clone());
            t.conv_in = Some(x.clone());
        }

        // 3. down blocks, keeping every output for the skip connections
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(gpu, &x, Some(&temb_act));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(gpu, &x, context, maps);
                }
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(gpu, &x);
                skips.push(x.clone());
            }
            if let Some(t) = trace.as_deref_mut() {
                t.down.push(x.clone());
            }
        }

        // 4. mid block: resnet, transformer, resnet
        let m = &self.mid_block;
        x = m.resnets[0].forward(gpu, &x, Some(&temb_act));
        x = m.attentions[0].forward(gpu, &x, context, maps);
        x = m.resnets[1].forward(gpu, &x, Some(&temb_act));
        if let Some(t) = trace.as_deref_mut() {
            t.mid = Some(x.clone());
        }

        // 5. up blocks: concatenate the matching skip before each resnet
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up-block resnet");
                x = resnet.forward(gpu, &gpu.concat(&x, &skip), Some(&temb_act));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(gpu, &x, context, maps);
                }
            }
            if let Some(up) = &block.upsampler {
                // grow to the next skip's size: 2x at sizes divisible by 8, else what
                // the down path produced (diffusers' forward_upsample_size)
                let size = skips.last().map(|s| (s.dim(1), s.dim(2)));
                x = up.forward(gpu, &x, size);
            }
            if let Some(t) = trace.as_deref_mut() {
                t.up.push(x.clone());
            }
        }

        // 6. out: GroupNorm, SiLU, conv_out
        let h = self.conv_norm_out.forward(gpu, &x, false);
        if let Some(t) = trace {
            t.conv_norm_out = Some(h.clone());
        }
        let h = gpu.map(&h, Map::Silu);
        Ok(self.conv_out.forward(gpu, &h))
    }
}
