//! Kernel micro-benchmarks at shapes a RoentGen UNet call really runs, shared by
//! `roentgen bench --kernels`, the browser benchmark and the burn comparison
//! (`tools/burn-compare`), so that all of them time the same work.

use crate::error::Result;
use crate::gpu::{Gpu, Tensor, WeightFormat};
use crate::ops::ConvGeom;

/// One kernel workload.
#[derive(Clone, Copy, Debug)]
pub enum KernelCase {
    /// `[m, k] x [n, k]^T`
    Linear { m: usize, k: usize, n: usize },
    /// NHWC `[b, h, w, c]` -> `cout`, 3x3, stride 1, pad 1.
    Conv3x3 {
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        cout: usize,
    },
    /// NHWC `[b, h*w, c]`, 32 groups.
    GroupNorm { b: usize, p: usize, c: usize },
    /// `[b, n, heads*d]` queries against `nk` keys.
    Attention {
        b: usize,
        n: usize,
        nk: usize,
        heads: usize,
        d: usize,
    },
}

impl KernelCase {
    pub fn name(&self) -> String {
        match *self {
            KernelCase::Linear { m, k, n } => format!("linear {m}x{k} -> {n}"),
            KernelCase::Conv3x3 { b, h, w, c, cout } => {
                format!("conv3x3 {b}x{h}x{w}x{c} -> {cout}")
            }
            KernelCase::GroupNorm { b, p, c } => format!("group_norm {b}x{p}x{c} /32"),
            KernelCase::Attention { b, n, nk, heads, d } => {
                format!("attention b{b} h{heads} {n}x{nk} d{d}")
            }
        }
    }

    pub fn flops(&self) -> f64 {
        match *self {
            KernelCase::Linear { m, k, n } => 2.0 * (m * k * n) as f64,
            KernelCase::Conv3x3 { b, h, w, c, cout } => 2.0 * (b * h * w * c * cout * 9) as f64,
            KernelCase::GroupNorm { b, p, c } => 8.0 * (b * p * c) as f64,
            KernelCase::Attention { b, n, nk, heads, d } => 4.0 * (b * heads * n * nk * d) as f64,
        }
    }
}

/// The workloads: the heaviest ops of a guided (batch 2) UNet call at `latent`
/// (64 for 512x512) and UNet width `base` (320 for SD 1.x).
pub fn unet_cases(latent: usize, base: usize) -> Vec<KernelCase> {
    let (s, c) = (latent, base);
    let tokens = 2 * s * s;
    vec![
        KernelCase::Linear {
            m: tokens,
            k: c,
            n: c,
        },
        KernelCase::Linear {
            m: tokens,
            k: c,
            n: 8 * c,
        },
        KernelCase::Linear {
            m: tokens / 4,
            k: 2 * c,
            n: 2 * c,
        },
        KernelCase::Conv3x3 {
            b: 2,
            h: s,
            w: s,
            c,
            cout: c,
        },
        KernelCase::Conv3x3 {
            b: 2,
            h: s / 2,
            w: s / 2,
            c: 2 * c,
            cout: 2 * c,
        },
        KernelCase::Conv3x3 {
            b: 2,
            h: s / 4,
            w: s / 4,
            c: 4 * c,
            cout: 4 * c,
        },
        KernelCase::GroupNorm { b: 2, p: s * s, c },
        KernelCase::Attention {
            b: 2,
            n: s * s,
            nk: s * s,
            heads: 8,
            d: c / 8,
        },
        KernelCase::Attention {
            b: 2,
            n: s * s,
            nk: 77,
            heads: 8,
            d: c / 8,
        },
    ]
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0) - 1.0)
        .collect()
}

/// Prepared inputs for one case; `run` dispatches the kernel once.
pub struct PreparedCase {
    pub case: KernelCase,
    inputs: Vec<Tensor>,
    weights: Vec<crate::gpu::Weight>,
}

impl PreparedCase {
    pub fn new(gpu: &Gpu, case: KernelCase, format: WeightFormat) -> Result<PreparedCase> {
        let weight = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = values(n, 3).iter().map(|x| x * 0.05).collect();
            gpu.weight("bench", &v, shape, format)
        };
        Ok(match case {
            KernelCase::Linear { m, k, n } => PreparedCase {
                case,
                inputs: vec![gpu.upload(&values(m * k, 1), &[m, k])?],
                weights: vec![
                    weight(&[n, k]),
                    gpu.weight("bias", &values(n, 2), &[n], WeightFormat::F32),
                ],
            },
            KernelCase::Conv3x3 { b, h, w, c, cout } => PreparedCase {
                case,
                inputs: vec![gpu.upload(&values(b * h * w * c, 1), &[b, h, w, c])?],
                weights: vec![
                    weight(&[cout, 3, 3, c]),
                    gpu.weight("bias", &values(cout, 2), &[cout], WeightFormat::F32),
                ],
            },
            KernelCase::GroupNorm { b, p, c } => PreparedCase {
                case,
                inputs: vec![gpu.upload(&values(b * p * c, 1), &[b, p, c])?],
                weights: vec![
                    gpu.weight("g", &values(c, 2), &[c], WeightFormat::F32),
                    gpu.weight("b", &values(c, 3), &[c], WeightFormat::F32),
                ],
            },
            KernelCase::Attention { b, n, nk, heads, d } => PreparedCase {
                case,
                inputs: vec![
                    gpu.upload(&values(b * n * heads * d, 1), &[b, n, heads * d])?,
                    gpu.upload(&values(b * nk * heads * d, 2), &[b, nk, heads * d])?,
                    gpu.upload(&values(b * nk * heads * d, 3), &[b, nk, heads * d])?,
                ],
                weights: vec![],
            },
        })
    }

    pub fn run(&self, gpu: &Gpu) -> Tensor {
        let (i, w) = (&self.inputs, &self.weights);
        match self.case {
            KernelCase::Linear { .. } => gpu.linear(&i[0], &w[0], Some(&w[1]), None),
            KernelCase::Conv3x3 { .. } => {
                gpu.conv2d(&i[0], &w[0], Some(&w[1]), ConvGeom::same(3), None)
            }
            KernelCase::GroupNorm { .. } => gpu.group_norm(&i[0], 32, &w[0], &w[1], 1e-5, true),
            KernelCase::Attention { heads, .. } => gpu.attention(&i[0], &i[1], &i[2], heads, false),
        }
    }
}

/// Times `reps` runs of a case (after one warm-up), each read back so that a failed or
/// skipped kernel cannot look fast. `now` gives seconds (`Instant` natively,
/// `performance.now()` in the browser). Returns sorted times in seconds.
pub async fn time_case(
    gpu: &Gpu,
    case: &PreparedCase,
    reps: usize,
    now: &dyn Fn() -> f64,
) -> Result<Vec<f64>> {
    let out = case.run(gpu);
    gpu.read(&out).await?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = now();
        let out = case.run(gpu);
        gpu.read(&out).await?;
        times.push(now() - t0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}
