//! Every hand-written kernel against a plain CPU reference (f64 accumulation) on fresh
//! random shapes and values, with outputs poisoned (NaN) first so that an element a
//! kernel never writes fails. Runs on lavapipe in CI.

mod common;

use common::{Rng, assert_close, gpus, read_on};
use roentgen_web::gpu::Gpu;
use roentgen_web::gpu::{Tensor, Weight, WeightFormat};
use roentgen_web::ops::{ConvGeom, Map};
use roentgen_web::quant::quantize;

/// An elementwise function's f64 reference.
type Reference = Box<dyn Fn(f64, f64) -> f64>;

/// f32 kernels against f64 references: accumulations of up to ~10^4 f32 products
/// lose about sqrt(K) * 2^-24 ≈ 1e-5 relative at worst; typical errors are 1e-7..1e-6.
const F32_TOL: f64 = 2e-5;

fn up(g: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    g.set_poison(true);
    g.upload(v, shape).unwrap()
}

/// Every storage format.
const FORMATS: [WeightFormat; 4] = [
    WeightFormat::F32,
    WeightFormat::F16,
    WeightFormat::Int8,
    WeightFormat::Int4,
];

/// `v` (in the kernels' order) as a weight in `format`, and the values the kernel should
/// see: the CPU reference of its storage (f16-rounded, or dequantized by
/// `roentgen_web::quant`).
fn weight_of(g: &Gpu, v: &[f32], shape: &[usize], format: WeightFormat) -> (Weight, Vec<f32>) {
    let seen = match format.quant() {
        Some(q) => quantize(v, q).dequantize(),
        None if format == WeightFormat::F16 => {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        }
        None => v.to_vec(),
    };
    (g.weight("w", v, shape, format), seen)
}

/// A random `[N, K]` weight in `format`, with a few outlier input channels (x6, as
/// trained SD weights have), and the values the kernel should see.
fn weight(
    g: &Gpu,
    rng: &mut Rng,
    shape: &[usize],
    scale: f32,
    format: WeightFormat,
) -> (Weight, Vec<f32>) {
    let n: usize = shape.iter().product();
    let k = *shape.last().unwrap();
    let outliers: Vec<usize> = (0..k.div_ceil(32)).map(|_| rng.range(0, k - 1)).collect();
    let v: Vec<f32> = rng
        .normal(n, scale)
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            if outliers.contains(&(i % k)) {
                6.0 * x
            } else {
                x
            }
        })
        .collect();
    weight_of(g, &v, shape, format)
}

fn vector(g: &Gpu, rng: &mut Rng, n: usize, scale: f32, offset: f32) -> (Weight, Vec<f32>) {
    let v: Vec<f32> = rng
        .normal(n, scale)
        .into_iter()
        .map(|x| x + offset)
        .collect();
    (g.weight("v", &v, &[n], WeightFormat::F32), v)
}

#[test]
fn linear_matches_cpu() {
    for (path, g) in gpus() {
        linear_matches_cpu_on(path, g);
    }
}

fn linear_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} linear"));
    // rounds 8 to 11: tall shapes with K a multiple of 32, one per format, which the
    // CPU form's broadcast variant takes on lavapipe's 8 lanes in its tall form (over 1
    // MFLOP in that context; 16 rows per thread: M past 12 x its threads per column;
    // quantized blocks of 32, one per step)
    for round in 0..12 {
        let tall = round >= 8;
        // (tall N a multiple of 40: a tile 8 or 16 threads wide, which the broadcast takes)
        let (m, k, n) = if tall {
            (
                rng.range(256, 600),
                32 * rng.range(2, 6),
                40 * rng.range(1, 6),
            )
        } else {
            (rng.range(1, 300), rng.range(1, 200), rng.range(1, 260))
        };
        let format = FORMATS[round % 4];
        let (has_bias, has_res) = (round % 2 == 0, round % 3 == 0);
        let x = rng.normal(m * k, 1.0);
        let (w, wv) = weight(g, &mut rng, &[n, k], 1.0 / (k as f32).sqrt(), format);
        let (b, bv) = vector(g, &mut rng, n, 0.5, 0.0);
        let r = rng.normal(m * n, 1.0);
        let xt = up(g, &x, &[m, k]);
        let rt = up(g, &r, &[m, n]);
        let out = g.linear(&xt, &w, has_bias.then_some(&b), has_res.then_some(&rt));
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    s += x[i * k + kk] as f64 * wv[j * k + kk] as f64;
                }
                if has_bias {
                    s += bv[j] as f64;
                }
                if has_res {
                    s += r[i * n + j] as f64;
                }
                want[i * n + j] = s as f32;
            }
        }
        assert_close(
            &format!("{path} linear {m}x{k}x{n} {format:?} bias {has_bias} res {has_res}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
}

/// Every format on every GEMM form, on shapes the quantized readers find hard: K not a
/// multiple of the block (blocks straddle rows), K a multiple of 4 but not of 32 (the
/// vec4 readers), odd N; weights with outlier input channels. The reference computes
/// with the dequantized weight, so the f32 tolerance holds.
#[test]
fn every_format_on_every_gemm_form() {
    for (path, g) in gpus() {
        let mut rng = Rng::from_env(&format!("{path} formats"));
        for format in FORMATS {
            let odd = |rng: &mut Rng| 2 * rng.range(1, 90) + 1;
            let shapes = [
                (
                    rng.range(1, 70),
                    32 * rng.range(1, 5) + 4 * rng.range(1, 7),
                    odd(&mut rng),
                ),
                (rng.range(1, 70), 2 * rng.range(17, 60) + 1, odd(&mut rng)),
                (rng.range(1, 70), 32 * rng.range(1, 6), odd(&mut rng)),
            ];
            for (m, k, n) in shapes {
                let x = rng.normal(m * k, 1.0);
                let (w, wv) = weight(g, &mut rng, &[n, k], 1.0 / (k as f32).sqrt(), format);
                let (b, bv) = vector(g, &mut rng, n, 0.5, 0.0);
                let out = g.linear(&up(g, &x, &[m, k]), &w, Some(&b), None);
                let want: Vec<f32> = (0..m * n)
                    .map(|o| {
                        let (i, j) = (o / n, o % n);
                        let s: f64 = (0..k)
                            .map(|kk| x[i * k + kk] as f64 * wv[j * k + kk] as f64)
                            .sum();
                        (s + bv[j] as f64) as f32
                    })
                    .collect();
                assert_close(
                    &format!("{path} {format:?} linear {m}x{k}x{n}"),
                    &read_on(g, &out),
                    &want,
                    F32_TOL,
                );
            }
        }
    }
}

/// Reference conv over NHWC with PyTorch-layout weights `[Cout, Cin, KH, KW]`.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f32],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    wt: &[f32],
    co: usize,
    k: usize,
    g: ConvGeom,
    bias: &[f32],
) -> (Vec<f32>, usize, usize) {
    let upf = if g.upsample { 2 } else { 1 };
    let (lh, lw) = (h * upf, w * upf);
    let oh = (lh + 2 * g.pad + g.pad_extra - k) / g.stride + 1;
    let ow = (lw + 2 * g.pad + g.pad_extra - k) / g.stride + 1;
    let mut out = vec![0f32; b * oh * ow * co];
    for bi in 0..b {
        for y in 0..oh {
            for xx in 0..ow {
                for o in 0..co {
                    let mut s = bias[o] as f64;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (y * g.stride + ky) as isize - g.pad as isize;
                            let ix = (xx * g.stride + kx) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= lh as isize || ix >= lw as isize {
                                continue;
                            }
                            let (sy, sx) = (iy as usize / upf, ix as usize / upf);
                            for ci in 0..c {
                                s += x[((bi * h + sy) * w + sx) * c + ci] as f64
                                    * wt[((o * c + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    out[((bi * oh + y) * ow + xx) * co + o] = s as f32;
                }
            }
        }
    }
    (out, oh, ow)
}

#[test]
fn conv2d_matches_cpu() {
    for (path, g) in gpus() {
        conv2d_matches_cpu_on(path, g);
    }
}

fn conv2d_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} conv2d"));
    // rounds 8 to 11: tall maps with Cin 64, one per format (the CPU
    // form's broadcast variant, as in `linear_matches_cpu_on`), same-size and upsampling
    for round in 0..12 {
        let tall = round >= 8;
        let b = rng.range(1, 2);
        let (h, w, c, co) = if tall {
            let hw = (rng.range(16, 24), rng.range(16, 24));
            (hw.0, hw.1, 64, 40 * rng.range(1, 2))
        } else {
            let hw = (rng.range(1, 13), rng.range(1, 13));
            (hw.0, hw.1, rng.range(1, 40), rng.range(1, 70))
        };
        let k = rng.pick(&[1, 3, 3]);
        let kind = if tall { [0, 3][round % 2] } else { round % 4 };
        let mut geom = match kind {
            0 => ConvGeom::same(k),
            1 => ConvGeom {
                stride: 2,
                pad: k / 2,
                pad_extra: 0,
                upsample: false,
            },
            2 => ConvGeom {
                stride: 2,
                pad: 0,
                pad_extra: 1,
                upsample: false,
            },
            _ => ConvGeom {
                upsample: true,
                ..ConvGeom::same(k)
            },
        };
        if h * (1 + geom.upsample as usize) + 2 * geom.pad + geom.pad_extra < k
            || w * (1 + geom.upsample as usize) + 2 * geom.pad + geom.pad_extra < k
        {
            geom = ConvGeom::same(k);
        }
        let format = if tall {
            FORMATS[round % 4]
        } else {
            FORMATS[(round + rng.range(0, 3)) % 4]
        };
        let x = rng.normal(b * h * w * c, 1.0);
        // PyTorch layout for the reference, reordered to [Cout, KH, KW, Cin] for the GPU
        // as the loader does (and quantized in that order, as the converter does).
        let wt = rng.normal(co * c * k * k, 1.0 / ((c * k * k) as f32).sqrt());
        let (wg, seen) = weight_of(g, &nhwc_weight(&wt, co, c, k), &[co, k, k, c], format);
        let wt = oihw_weight(&seen, co, c, k);
        let (bias, bv) = vector(g, &mut rng, co, 0.5, 0.0);
        let (want, oh, ow) = conv_ref(&x, b, h, w, c, &wt, co, k, geom, &bv);
        let xt = up(g, &x, &[b, h, w, c]);
        let res = rng.normal(want.len(), 1.0);
        let with_res = round % 2 == 1;
        let rt = up(g, &res, &[b, oh, ow, co]);
        let out = g.conv2d(&xt, &wg, Some(&bias), geom, with_res.then_some(&rt));
        assert_eq!(out.shape(), &[b, oh, ow, co]);
        let want: Vec<f32> = if with_res {
            want.iter().zip(&res).map(|(a, r)| a + r).collect()
        } else {
            want
        };
        assert_close(
            &format!("{path} conv2d {b}x{h}x{w}x{c} -> {co} k{k} {geom:?} {format:?}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
}

/// GroupNorm (+ SiLU) of `x [b, p, c]` in f64.
#[allow(clippy::too_many_arguments)]
fn group_norm_ref(
    x: &[f32],
    b: usize,
    p: usize,
    c: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu: bool,
) -> Vec<f32> {
    let cg = c / groups;
    let mut want = vec![0f32; x.len()];
    for bi in 0..b {
        for g in 0..groups {
            let idx: Vec<usize> = (0..p)
                .flat_map(|pi| (0..cg).map(move |ci| (bi * p + pi) * c + g * cg + ci))
                .collect();
            let mean = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / idx.len() as f64;
            let var = idx
                .iter()
                .map(|&i| (x[i] as f64 - mean).powi(2))
                .sum::<f64>()
                / idx.len() as f64;
            for &i in &idx {
                let ch = i % c;
                let mut y =
                    (x[i] as f64 - mean) / (var + eps).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
                if silu {
                    y /= 1.0 + (-y).exp();
                }
                want[i] = y as f32;
            }
        }
    }
    want
}

/// The inverse of [`nhwc_weight`].
fn oihw_weight(perm: &[f32], co: usize, c: usize, k: usize) -> Vec<f32> {
    let mut wt = vec![0f32; perm.len()];
    for o in 0..co {
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    wt[((o * c + ci) * k + ky) * k + kx] = perm[((o * k + ky) * k + kx) * c + ci];
                }
            }
        }
    }
    wt
}

/// PyTorch's conv weight `[Cout, Cin, K, K]` reordered to `[Cout, K, K, Cin]` as the loader does.
fn nhwc_weight(wt: &[f32], co: usize, c: usize, k: usize) -> Vec<f32> {
    let mut perm = vec![0f32; wt.len()];
    for o in 0..co {
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    perm[((o * k + ky) * k + kx) * c + ci] = wt[((o * c + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    perm
}

#[test]
fn group_norm_matches_cpu() {
    for (path, g) in gpus() {
        group_norm_matches_cpu_on(path, g);
    }
}

fn group_norm_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} group_norm"));
    for round in 0..6 {
        let b = rng.range(1, 3);
        let groups = rng.pick(&[1, 2, 4, 8, 32]);
        let c = groups * rng.range(1, 6);
        let p = rng.range(1, 700);
        let silu = round % 2 == 0;
        let eps = 1e-5f32;
        // an offset mean stresses the two-pass variance
        let x: Vec<f32> = rng
            .normal(b * p * c, 2.0)
            .into_iter()
            .map(|v| v + 3.0)
            .collect();
        let (gm, gv) = vector(g, &mut rng, c, 0.2, 1.0);
        let (bt, bv) = vector(g, &mut rng, c, 0.2, 0.0);
        let want = group_norm_ref(&x, b, p, c, groups, &gv, &bv, eps as f64, silu);
        let out = g.group_norm(&up(g, &x, &[b, p, c]), groups, &gm, &bt, eps, silu);
        assert_close(
            &format!("{path} group_norm b{b} p{p} c{c} g{groups} silu {silu}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn layer_norm_matches_cpu() {
    for (path, g) in gpus() {
        layer_norm_matches_cpu_on(path, g);
    }
}

fn layer_norm_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} layer_norm"));
    for _ in 0..4 {
        let rows = rng.range(1, 200);
        let c = rng.range(1, 1100);
        let x: Vec<f32> = rng
            .normal(rows * c, 1.5)
            .into_iter()
            .map(|v| v - 2.0)
            .collect();
        let (gm, gv) = vector(g, &mut rng, c, 0.2, 1.0);
        let (bt, bv) = vector(g, &mut rng, c, 0.2, 0.0);
        let mut want = vec![0f32; x.len()];
        for r in 0..rows {
            let row = &x[r * c..(r + 1) * c];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            for i in 0..c {
                want[r * c + i] = ((row[i] as f64 - mean) / (var + 1e-5).sqrt() * gv[i] as f64
                    + bv[i] as f64) as f32;
            }
        }
        let out = g.layer_norm(&up(g, &x, &[rows, c]), &gm, &bt, 1e-5);
        assert_close(
            &format!("{path} layer_norm {rows}x{c}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn attention_matches_cpu() {
    for (path, g) in gpus() {
        attention_matches_cpu_on(path, g);
    }
}

fn attention_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} attention"));
    for round in 0..7 {
        let b = rng.range(1, 2);
        let heads = rng.pick(&[1, 2, 3, 8]);
        let d = rng.pick(&[4, 8, 40, 64, 80, 160]);
        let d = if round == 6 { 512 } else { d };
        let heads = if d >= 160 { 1 } else { heads };
        let nq = rng.range(1, 150);
        let causal = round % 3 == 0;
        let nk = if causal { nq } else { rng.range(1, 120) };
        let c = heads * d;
        let q = rng.normal(b * nq * c, 1.0);
        let k = rng.normal(b * nk * c, 1.0);
        let v = rng.normal(b * nk * c, 1.0);
        let scale = 1.0 / (d as f64).sqrt();
        let mut want = vec![0f32; b * nq * c];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..nq {
                    let s: Vec<f64> = (0..nk)
                        .map(|j| {
                            if causal && j > i {
                                return f64::NEG_INFINITY;
                            }
                            (0..d)
                                .map(|e| {
                                    q[(bi * nq + i) * c + h * d + e] as f64
                                        * k[(bi * nk + j) * c + h * d + e] as f64
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = s.iter().map(|&x| (x - mx).exp()).collect();
                    let sum: f64 = p.iter().sum();
                    for e in 0..d {
                        let o: f64 = (0..nk)
                            .map(|j| p[j] * v[(bi * nk + j) * c + h * d + e] as f64)
                            .sum();
                        want[(bi * nq + i) * c + h * d + e] = (o / sum) as f32;
                    }
                }
            }
        }
        let out = g.attention(
            &up(g, &q, &[b, nq, c]),
            &up(g, &k, &[b, nk, c]),
            &up(g, &v, &[b, nk, c]),
            heads,
            causal,
        );
        assert_close(
            &format!("{path} attention b{b} h{heads} d{d} nq{nq} nk{nk} causal {causal}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn elementwise_matches_cpu() {
    for (path, g) in gpus() {
        elementwise_matches_cpu_on(path, g);
    }
}

fn elementwise_matches_cpu_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(&format!("{path} elementwise"));
    let n = rng.range(1, 70_000);
    let a = rng.normal(n, 3.0);
    let bv = rng.normal(n, 3.0);
    let (at, bt) = (up(g, &a, &[n]), up(g, &bv, &[n]));
    let erf = |x: f64| {
        // Abramowitz-Stegun 7.1.26 is too coarse for a reference; integrate instead.
        let steps = 2000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..steps {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    let cases: [(Map, Reference); 5] = [
        (Map::Add, Box::new(|x, y| x + y)),
        (Map::Mul, Box::new(|x, y| x * y)),
        (Map::Silu, Box::new(|x, _| x / (1.0 + (-x).exp()))),
        (
            Map::QuickGelu,
            Box::new(|x, _| x / (1.0 + (-1.702 * x).exp())),
        ),
        (
            Map::Gelu,
            Box::new(move |x, _| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()))),
        ),
    ];
    for (f, r) in cases {
        let out = if matches!(f, Map::Add | Map::Mul) {
            g.zip(&at, &bt, f)
        } else {
            g.map(&at, f)
        };
        let want: Vec<f32> = a
            .iter()
            .zip(&bv)
            .map(|(&x, &y)| r(x as f64, y as f64) as f32)
            .collect();
        assert_close(
            &format!("{path} {f:?} n{n}"),
            &read_on(g, &out),
            &want,
            F32_TOL,
        );
    }
    // per-row broadcast
    let (bb, p, c) = (rng.range(1, 3), rng.range(1, 50), rng.range(1, 90));
    let x = rng.normal(bb * p * c, 1.0);
    let t = rng.normal(bb * c, 1.0);
    let out = g.zip_rows(&up(g, &x, &[bb, p, c]), &up(g, &t, &[bb, c]), Map::Add);
    let want: Vec<f32> = (0..x.len())
        .map(|i| x[i] + t[(i / (p * c)) * c + i % c])
        .collect();
    assert_close(
        &format!("{path} zip_rows"),
        &read_on(g, &out),
        &want,
        F32_TOL,
    );
    // GEGLU
    let (r, f) = (rng.range(1, 100), rng.range(1, 300));
    let x = rng.normal(r * 2 * f, 2.0);
    let out = g.geglu(&up(g, &x, &[r, 2 * f]));
    let want: Vec<f32> = (0..r * f)
        .map(|i| {
            let (row, col) = (i / f, i % f);
            let g = x[row * 2 * f + f + col] as f64;
            (x[row * 2 * f + col] as f64 * 0.5 * g * (1.0 + erf(g / 2f64.sqrt()))) as f32
        })
        .collect();
    assert_close(&format!("{path} geglu"), &read_on(g, &out), &want, F32_TOL);
    // concat
    let (rows, c1, c2) = (rng.range(1, 100), rng.range(1, 50), rng.range(1, 50));
    let a = rng.normal(rows * c1, 1.0);
    let b2 = rng.normal(rows * c2, 1.0);
    let out = g.concat(&up(g, &a, &[rows, c1]), &up(g, &b2, &[rows, c2]));
    let want: Vec<f32> = (0..rows)
        .flat_map(|r| {
            a[r * c1..(r + 1) * c1]
                .iter()
                .chain(&b2[r * c2..(r + 1) * c2])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close(&format!("{path} concat"), &read_on(g, &out), &want, 0.0);
}

/// Maps split into channel slices (how the VAE decodes 512x512 within 128 MiB
/// bindings), forced at small sizes by a context that claims 4 KiB bindings.
#[test]
fn sliced_conv_and_group_norm_match_cpu() {
    for (path, g) in common::gpus_small_bindings() {
        sliced_on(path, g);
    }
}

fn sliced_on(path: &str, g: &Gpu) {
    let mut rng = Rng::from_env(path);
    for round in 0..4 {
        let b = rng.range(1, 2);
        // 8x8 outputs of 32 channels: 8 or 16 KiB, two or four 4 KiB slices
        let (h, w) = if round == 2 { (4, 4) } else { (8, 8) };
        // input slices of 4..16 channels
        let slices: Vec<usize> = (0..rng.range(1, 3)).map(|_| 4 * rng.range(1, 4)).collect();
        let c: usize = slices.iter().sum();
        let co = 32;
        let k = if round % 2 == 0 { 3 } else { 1 };
        let geom = ConvGeom {
            upsample: round == 2,
            ..ConvGeom::same(k)
        };
        let x = rng.normal(b * h * w * c, 1.0);
        let wt = rng.normal(co * c * k * k, 1.0 / ((c * k * k) as f32).sqrt());
        // slices start mid-block: every format
        let (wg, seen) = weight_of(
            g,
            &nhwc_weight(&wt, co, c, k),
            &[co, k, k, c],
            FORMATS[round],
        );
        let wt = oihw_weight(&seen, co, c, k);
        let (bias, bv) = vector(g, &mut rng, co, 0.5, 0.0);
        let (want, oh, ow) = conv_ref(&x, b, h, w, c, &wt, co, k, geom, &bv);
        // split x into its channel slices
        let mut xs = Vec::new();
        let mut c0 = 0;
        for &cs in &slices {
            let part: Vec<f32> = (0..b * h * w)
                .flat_map(|p| x[p * c + c0..p * c + c0 + cs].to_vec())
                .collect();
            xs.push(up(g, &part, &[b, h, w, cs]));
            c0 += cs;
        }
        let outs = g.conv2d_sliced(&xs, &wg, Some(&bias), geom, None);
        assert!(
            outs.len() > 1,
            "the small-binding context should split the output"
        );
        let joined = |outs: &[Tensor]| -> Vec<f32> {
            let parts: Vec<Vec<f32>> = outs.iter().map(|t| read_on(g, t)).collect();
            let widths: Vec<usize> = outs.iter().map(|t| t.dim(-1)).collect();
            (0..b * oh * ow)
                .flat_map(|p| {
                    parts
                        .iter()
                        .zip(&widths)
                        .flat_map(move |(v, &cw)| v[p * cw..(p + 1) * cw].to_vec())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_close(
            &format!(
                "{path} conv2d {b}x{h}x{w}x{slices:?} -> {co} k{k} in {} slices",
                outs.len()
            ),
            &joined(&outs),
            &want,
            F32_TOL,
        );
        // GroupNorm over the slices (32 groups of co/32 channels)
        let (gm, gv) = vector(g, &mut rng, co, 0.2, 1.0);
        let (bt, btv) = vector(g, &mut rng, co, 0.2, 0.0);
        let normed = g.group_norm_sliced(&outs, 32, &gm, &bt, 1e-6, true);
        let want_n = group_norm_ref(&want, b, oh * ow, co, 32, &gv, &btv, 1e-6, true);
        assert_close(
            &format!("{path} group_norm over {} slices", normed.len()),
            &joined(&normed),
            &want_n,
            F32_TOL,
        );
    }
}

/// The engine's own kernel check (src/kernel_check.rs, what the browser test runs in
/// Chromium at 4 lanes) on this machine's adapter and its portable path.
#[test]
fn the_engines_kernel_check_meets_its_bar() {
    for (path, g) in gpus() {
        let rows = pollster::block_on(roentgen_web::kernel_check::check_kernels(g, 7)).unwrap();
        assert!(rows.len() >= 15, "{path}: {rows:?}");
        for r in rows {
            assert!(
                r.rel_l2 <= roentgen_web::kernel_check::REL_L2_BAR,
                "{path} {}: rel L2 {:e}",
                r.kernel,
                r.rel_l2
            );
        }
    }
}
