//! The kernels against plain CPU references on this adapter, from inside the engine, so
//! that the browser can run them too (`tests/browser/subgroups.test.mjs`: Chromium's
//! SwiftShader, subgroups of 4 lanes). tests/kernels.rs is the thorough native suite;
//! this is its core at every GEMM form the adapter takes and every weight format:
//! linear and 3x3 conv GEMMs (f32, f16, int8, int4; bias and residual; a tall linear
//! past the CPU form's 16-row threshold, f32 and int8), LayerNorm and
//! attention (non-causal and causal, head dims 40 and 64: the flash kernel where the
//! adapter has subgroups, the chunked GEMM and softmax otherwise), each on fresh
//! pseudo-random shapes and values with outputs poisoned (NaN) first, so that an element
//! a kernel never writes fails. References accumulate in f64.

use crate::error::Result;
use crate::gpu::{Gpu, KernelPath, Tensor, WeightFormat};
use crate::ops::ConvGeom;

/// One kernel's result: what ran and its relative L2 error against the reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Checked {
    pub kernel: String,
    pub rel_l2: f64,
}

/// The bar every check must meet: f32 accumulation over at most a few thousand
/// products (tests/kernels.rs's F32_TOL).
pub const REL_L2_BAR: f64 = 2e-5;

/// A small deterministic generator (xorshift), normal values by Box-Muller.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1 = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * scale
            })
            .collect()
    }
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = g as f64 - w as f64;
        // a NaN (an unwritten, poisoned element) makes the error NaN: never below a bar
        num += d * d;
        den += (w as f64) * (w as f64);
    }
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// The values a kernel sees of a weight stored in `format`.
fn seen(v: &[f32], format: WeightFormat) -> Vec<f32> {
    match format.quant() {
        Some(q) => crate::quant::quantize(v, q).dequantize(),
        None if format == WeightFormat::F16 => {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        }
        None => v.to_vec(),
    }
}

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Result<Tensor> {
    gpu.set_poison(true);
    let t = gpu.upload(v, shape);
    gpu.set_poison(false);
    t
}

/// Runs every check on `gpu`; `seed` picks the shapes and values.
pub async fn check_kernels(gpu: &Gpu, seed: u64) -> Result<Vec<Checked>> {
    let mut rng = Rng(seed.max(1));
    let mut out = Vec::new();
    let path = match gpu.info.path {
        KernelPath::Subgroup(sg) => format!("subgroup{sg}"),
        KernelPath::CpuDriver => "cpu".into(),
        KernelPath::Tiled => "tiled".into(),
    };
    let formats = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Int8,
        WeightFormat::Int4,
    ];
    // linear: K a multiple of 4 (the subgroup form) and not (its fallback)
    for (i, format) in formats.iter().copied().enumerate() {
        for aligned in [true, false] {
            let m = rng.range(1, 96);
            // f32: K a multiple of 16, so that the CPU form's 4-lane broadcasts run
            let k = if aligned && format == WeightFormat::F32 {
                16 * rng.range(2, 10)
            } else if aligned {
                4 * rng.range(8, 40)
            } else {
                4 * rng.range(8, 40) + 1 + i % 3
            };
            let n = rng.range(1, 80);
            let (bias, res) = (i % 2 == 0, i % 3 != 1);
            let x = rng.normal(m * k, 1.0);
            let wv = rng.normal(n * k, 1.0 / (k as f32).sqrt());
            let w = gpu.weight("w", &wv[..], &[n, k], format);
            let ws = seen(&wv, format);
            let bv = rng.normal(n, 0.5);
            let b = gpu.weight("b", &bv[..], &[n], WeightFormat::F32);
            let r = rng.normal(m * n, 1.0);
            let xt = upload(gpu, &x, &[m, k])?;
            let rt = upload(gpu, &r, &[m, n])?;
            let o = gpu.linear(&xt, &w, bias.then_some(&b), res.then_some(&rt));
            let mut want = vec![0f32; m * n];
            for a in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for kk in 0..k {
                        s += x[a * k + kk] as f64 * ws[j * k + kk] as f64;
                    }
                    s += if bias { bv[j] as f64 } else { 0.0 };
                    s += if res { r[a * n + j] as f64 } else { 0.0 };
                    want[a * n + j] = s as f32;
                }
            }
            out.push(Checked {
                kernel: format!(
                    "{path} linear {m}x{k}x{n} {} bias {bias} res {res}",
                    format.name()
                ),
                rel_l2: rel_l2(&gpu.read(&o).await?, &want),
            });
        }
    }
    // a tall linear (past `GpuInfo::cpu_tall_flops`: the CPU form's 16-row broadcasts,
    // which quantized weights take too), f32 and int8
    for format in [WeightFormat::F32, WeightFormat::Int8] {
        let (m, k, n) = (rng.range(512, 600), 256, 280);
        let x = rng.normal(m * k, 1.0);
        let wv = rng.normal(n * k, 1.0 / (k as f32).sqrt());
        let w = gpu.weight("w", &wv[..], &[n, k], format);
        let ws = seen(&wv, format);
        let o = gpu.linear(&upload(gpu, &x, &[m, k])?, &w, None, None);
        let want: Vec<f32> = (0..m * n)
            .map(|o| {
                let (a, j) = (o / n, o % n);
                let (xa, wj) = (&x[a * k..(a + 1) * k], &ws[j * k..(j + 1) * k]);
                xa.iter()
                    .zip(wj)
                    .map(|(&p, &q)| p as f64 * q as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        out.push(Checked {
            kernel: format!("{path} tall linear {m}x{k}x{n} {}", format.name()),
            rel_l2: rel_l2(&gpu.read(&o).await?, &want),
        });
    }
    // 3x3 conv, padding 1, NHWC; int8 also with Cin a multiple of the quantization
    // block (the CPU-driver form's blocked walk: RoentGen's convs)
    for (format, blocked) in [
        (WeightFormat::F32, false),
        (WeightFormat::Int8, false),
        (WeightFormat::Int8, true),
    ] {
        let (h, w) = (rng.range(3, 12), rng.range(3, 12));
        let ci = if blocked {
            32 * rng.range(1, 3)
        } else if format == WeightFormat::F32 {
            16 * rng.range(1, 3) // the CPU form's 4-lane broadcasts
        } else {
            4 * rng.range(1, 8)
        };
        let co = rng.range(1, 24);
        let x = rng.normal(h * w * ci, 1.0);
        // weights [co, 3, 3, ci]: PyTorch's [co, ci, 3, 3] as the loader reorders it
        let wv = rng.normal(co * ci * 9, 1.0 / ((9 * ci) as f32).sqrt());
        let wt = gpu.weight("conv", &wv[..], &[co, 3, 3, ci], format);
        let ws = seen(&wv, format);
        let bv = rng.normal(co, 0.5);
        let b = gpu.weight("b", &bv[..], &[co], WeightFormat::F32);
        let xt = upload(gpu, &x, &[1, h, w, ci])?;
        let o = gpu.conv2d(&xt, &wt, Some(&b), ConvGeom::same(3), None);
        let mut want = vec![0f32; h * w * co];
        for y in 0..h {
            for xx in 0..w {
                for c in 0..co {
                    let mut s = bv[c] as f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (sy, sx) = (y as isize + ky - 1, xx as isize + kx - 1);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            for i in 0..ci {
                                let xv = x[((sy as usize) * w + sx as usize) * ci + i];
                                let wvv = ws[((c * 3 + ky as usize) * 3 + kx as usize) * ci + i];
                                s += xv as f64 * wvv as f64;
                            }
                        }
                    }
                    want[(y * w + xx) * co + c] = s as f32;
                }
            }
        }
        out.push(Checked {
            kernel: format!("{path} conv3x3 {h}x{w} {ci}->{co} {}", format.name()),
            rel_l2: rel_l2(&gpu.read(&o).await?, &want),
        });
    }
    // LayerNorm
    for cols in [rng.range(8, 300), 768] {
        let rows = rng.range(1, 70);
        let x = rng.normal(rows * cols, 2.0);
        let gv = rng.normal(cols, 0.3);
        let bv = rng.normal(cols, 0.3);
        let g = gpu.weight("g", &gv[..], &[cols], WeightFormat::F32);
        let bb = gpu.weight("b", &bv[..], &[cols], WeightFormat::F32);
        let xt = upload(gpu, &x, &[rows, cols])?;
        let o = gpu.layer_norm(&xt, &g, &bb, 1e-5);
        let mut want = vec![0f32; rows * cols];
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            for c in 0..cols {
                want[r * cols + c] =
                    ((row[c] as f64 - mean) * rstd * gv[c] as f64 + bv[c] as f64) as f32;
            }
        }
        out.push(Checked {
            kernel: format!("{path} layer_norm {rows}x{cols}"),
            rel_l2: rel_l2(&gpu.read(&o).await?, &want),
        });
    }
    // attention (q, k, v [B, N, heads * d])
    for (d, causal) in [(40, false), (64, true), (64, false)] {
        let heads = rng.range(1, 3);
        let (nq, nk) = if causal {
            let n = rng.range(2, 90);
            (n, n)
        } else {
            (rng.range(1, 120), rng.range(1, 90))
        };
        let c = heads * d;
        let q = rng.normal(nq * c, 1.0);
        let k = rng.normal(nk * c, 1.0);
        let v = rng.normal(nk * c, 1.0);
        let (qt, kt, vt) = (
            upload(gpu, &q, &[1, nq, c])?,
            upload(gpu, &k, &[1, nk, c])?,
            upload(gpu, &v, &[1, nk, c])?,
        );
        let o = gpu.attention(&qt, &kt, &vt, heads, causal);
        let mut want = vec![0f32; nq * c];
        let scale = 1.0 / (d as f64).sqrt();
        for h in 0..heads {
            for i in 0..nq {
                let limit = if causal { (i + 1).min(nk) } else { nk };
                let s: Vec<f64> = (0..limit)
                    .map(|j| {
                        (0..d)
                            .map(|e| q[i * c + h * d + e] as f64 * k[j * c + h * d + e] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = p.iter().sum();
                for e in 0..d {
                    let acc: f64 = (0..limit).map(|j| p[j] * v[j * c + h * d + e] as f64).sum();
                    want[i * c + h * d + e] = (acc / z) as f32;
                }
            }
        }
        out.push(Checked {
            kernel: format!("{path} attention {nq}x{nk} heads {heads} d {d} causal {causal}"),
            rel_l2: rel_l2(&gpu.read(&o).await?, &want),
        });
    }
    gpu.trim();
    Ok(out)
}
