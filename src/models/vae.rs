//! `diffusers.AutoencoderKL`: the decoder (latents to image) and the encoder (image to
//! latent moments, for image-to-image), built from its `config.json`.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::loader::Loader;
use crate::models::blocks::{Downsample2D, ResnetBlock2D, Upsample2D, VaeAttention};
use crate::models::config::VaeConfig;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::ops::ConvGeom;

/// `UNetMidBlock2D` of the VAE: resnet, attention, resnet (no time embedding).
pub struct VaeMidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<VaeAttention>,
}

impl VaeMidBlock {
    fn load(l: &Loader, ch: usize, groups: usize, attention: bool) -> Result<Self> {
        Ok(VaeMidBlock {
            resnets: (0..2)
                .map(|j| ResnetBlock2D::load(&l.pp("resnets").pp(j), ch, ch, None, groups, 1e-6))
                .collect::<Result<_>>()?,
            attentions: if attention {
                vec![VaeAttention::load(&l.pp("attentions").pp(0), ch, groups)?]
            } else {
                vec![]
            },
        })
    }
    fn forward(&self, gpu: &Gpu, x: &[Tensor]) -> Vec<Tensor> {
        let mut x = self.resnets[0].forward_sliced(gpu, x, None);
        if let Some(a) = self.attentions.first() {
            // At the VAE's lowest resolution the map is one slice (8 MiB at 512x512;
            // `models::fit::check` refuses a size where it would not be).
            assert_eq!(x.len(), 1, "VAE attention on a sliced map");
            x = vec![a.forward(gpu, &x[0])];
        }
        self.resnets[1].forward_sliced(gpu, &x, None)
    }
}

pub struct EncoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
}

pub struct DecoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<EncoderBlock>,
    pub mid_block: VaeMidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: VaeMidBlock,
    pub up_blocks: Vec<DecoderBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// A sliced map as one tensor (traces at test sizes, where it is one slice anyway).
fn joined(gpu: &Gpu, x: &[Tensor]) -> Tensor {
    x.iter()
        .skip(1)
        .fold(x[0].clone(), |acc, s| gpu.concat(&acc, s))
}

/// Intermediate decoder outputs, for parity tests.
#[derive(Default)]
pub struct DecoderTrace {
    pub post_quant_conv: Option<Tensor>,
    pub mid: Option<Tensor>,
    pub up: Vec<Tensor>,
}

pub struct AutoencoderKL {
    pub config: VaeConfig,
    pub encoder: Option<Encoder>,
    pub decoder: Decoder,
    pub quant_conv: Option<Linear>,
    pub post_quant_conv: Option<Linear>,
}

impl AutoencoderKL {
    /// Loads the decoder, and the encoder too when `with_encoder` (text-to-image does
    /// not need it: a third of the VAE's weights stay on disk).
    pub fn load(l: &Loader, config: VaeConfig, with_encoder: bool) -> Result<Self> {
        let c = &config;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let g = c.norm_num_groups;
        let lat = c.latent_channels;

        let ld = l.pp("decoder");
        let top = ch[n - 1];
        let mut up_blocks = Vec::new();
        let mut prev = top;
        for i in 0..n {
            let out = ch[n - 1 - i];
            let lb = ld.pp("up_blocks").pp(i);
            let resnets = (0..c.layers_per_block + 1)
                .map(|j| {
                    ResnetBlock2D::load(
                        &lb.pp("resnets").pp(j),
                        if j == 0 { prev } else { out },
                        out,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<Result<_>>()?;
            let upsampler = if i + 1 < n {
                Some(Upsample2D::load(&lb.pp("upsamplers").pp(0), out)?)
            } else {
                None
            };
            up_blocks.push(DecoderBlock { resnets, upsampler });
            prev = out;
        }
        let decoder = Decoder {
            conv_in: Conv2d::load(&ld.pp("conv_in"), lat, top, 3, ConvGeom::same(3))?,
            mid_block: VaeMidBlock::load(&ld.pp("mid_block"), top, g, c.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&ld.pp("conv_norm_out"), ch[0], g, 1e-6)?,
            conv_out: Conv2d::load(
                &ld.pp("conv_out"),
                ch[0],
                c.out_channels,
                3,
                ConvGeom::same(3),
            )?,
        };

        let encoder = if with_encoder {
            let le = l.pp("encoder");
            let mut down_blocks = Vec::new();
            let mut prev = ch[0];
            for (i, &out) in ch.iter().enumerate() {
                let lb = le.pp("down_blocks").pp(i);
                let resnets = (0..c.layers_per_block)
                    .map(|j| {
                        ResnetBlock2D::load(
                            &lb.pp("resnets").pp(j),
                            if j == 0 { prev } else { out },
                            out,
                            None,
                            g,
                            1e-6,
                        )
                    })
                    .collect::<Result<_>>()?;
                let downsampler = if i + 1 < n {
                    Some(Downsample2D::load(&lb.pp("downsamplers").pp(0), out, 0)?)
                } else {
                    None
                };
                down_blocks.push(EncoderBlock {
                    resnets,
                    downsampler,
                });
                prev = out;
            }
            Some(Encoder {
                conv_in: Conv2d::load(
                    &le.pp("conv_in"),
                    c.in_channels,
                    ch[0],
                    3,
                    ConvGeom::same(3),
                )?,
                down_blocks,
                mid_block: VaeMidBlock::load(
                    &le.pp("mid_block"),
                    top,
                    g,
                    c.mid_block_add_attention,
                )?,
                conv_norm_out: GroupNorm::load(&le.pp("conv_norm_out"), top, g, 1e-6)?,
                conv_out: Conv2d::load(&le.pp("conv_out"), top, 2 * lat, 3, ConvGeom::same(3))?,
            })
        } else {
            None
        };
        let quant_conv = if with_encoder && c.use_quant_conv {
            Some(Linear::load_pointwise(
                &l.pp("quant_conv"),
                2 * lat,
                2 * lat,
            )?)
        } else {
            None
        };
        let post_quant_conv = if c.use_post_quant_conv {
            Some(Linear::load_pointwise(&l.pp("post_quant_conv"), lat, lat)?)
        } else {
            None
        };
        Ok(AutoencoderKL {
            config,
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
        })
    }

    /// `z [B, h, w, latent]` (already divided by the scaling factor) -> image
    /// `[B, 8h, 8w, 3]` in about [-1, 1].
    pub fn decode(&self, gpu: &Gpu, z: &Tensor) -> Tensor {
        self.decode_traced(gpu, z, None)
    }

    pub fn decode_traced(
        &self,
        gpu: &Gpu,
        z: &Tensor,
        mut trace: Option<&mut DecoderTrace>,
    ) -> Tensor {
        let d = &self.decoder;
        // 1. post_quant_conv (1x1)
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(gpu, z),
            None => z.clone(),
        };
        if let Some(t) = trace.as_deref_mut() {
            t.post_quant_conv = Some(z.clone());
        }
        // 2. conv_in, mid block. From here on maps are held as channel slices that
        //    each fit one storage binding (at 512x512 the last up blocks' maps are
        //    128-256 MiB); at small sizes that is a single slice.
        let mut x = {
            let x = d
                .conv_in
                .forward_sliced(gpu, std::slice::from_ref(&z), None);
            d.mid_block.forward(gpu, &x)
        };
        drop(z);
        if let Some(t) = trace.as_deref_mut() {
            t.mid = Some(joined(gpu, &x));
        }
        // 3. up blocks
        for block in &d.up_blocks {
            for r in &block.resnets {
                x = r.forward_sliced(gpu, &x, None);
            }
            if let Some(u) = &block.upsampler {
                x = u.forward_sliced(gpu, &x);
            }
            if let Some(t) = trace.as_deref_mut() {
                t.up.push(joined(gpu, &x));
            }
        }
        // 4. GroupNorm + SiLU, conv_out (3 channels: one slice)
        // (each map dropped once read: these are the decode's largest)
        let n = d.conv_norm_out.forward_sliced(gpu, &x, true);
        drop(x);
        d.conv_out.forward_sliced(gpu, &n, None).pop().unwrap()
    }

    /// `image [B, H, W, 3]` in [-1, 1] -> moments `[B, H/8, W/8, 2 * latent]` (mean,
    /// then log-variance, as diffusers' `latent_dist.parameters`).
    pub fn encode(&self, gpu: &Gpu, image: &Tensor) -> Result<Tensor> {
        let e = self.encoder.as_ref().ok_or_else(|| {
            crate::Error::Internal(
                "the VAE was loaded without its encoder (load it with_encoder)".into(),
            )
        })?;
        let mut x = e.conv_in.forward(gpu, image);
        for block in &e.down_blocks {
            for r in &block.resnets {
                x = r.forward(gpu, &x, None);
            }
            if let Some(dn) = &block.downsampler {
                x = dn.forward(gpu, &x);
            }
        }
        let x = e
            .mid_block
            .forward(gpu, std::slice::from_ref(&x))
            .pop()
            .unwrap();
        let x = e.conv_norm_out.forward(gpu, &x, true);
        let x = e.conv_out.forward(gpu, &x);
        Ok(match &self.quant_conv {
            Some(q) => q.forward(gpu, &x),
            None => x,
        })
    }
}
