//! `burn-compare`: times burn 0.22.1's own wgpu kernels against roentgen-web's
//! hand-written WGSL kernels on the same workloads (`roentgen_web::bench::unet_cases`),
//! checks that both compute the same thing, and prints (and appends to RESULTS.md) a
//! markdown table of the two medians and their ratio.
//!
//! Each side gets the same logical tensors in its own native layout, laid out on the CPU
//! before timing: ours NHWC / `[B, N, H*D]` / linear weights `[N, K]`; burn's NCHW /
//! `[B, H, N, D]` / linear weights `[K, N]` (as `burn::nn::Linear` stores them). A timed
//! run is one op plus the read-back of its result to the CPU (burn: `try_into_data()`
//! and then `as_slice()`, which waits for the lazy bytes; `sync()` would not report a
//! failed kernel), after one untimed warm-up run on negated input. Every timed run's
//! output is checked against ours.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use burn::module::Param;
use burn::nn::GroupNorm;
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Device, Tensor, TensorData, activation, module};
use roentgen_web::bench::{KernelCase, PreparedCase, time_case, unet_cases};
use roentgen_web::gpu::{Gpu, WeightFormat};

struct Args {
    latent: usize,
    width_scale: f64,
    reps: usize,
    warmup: usize,
    /// Case kinds to run: linear, conv, group_norm, attention.
    only: Vec<String>,
    /// Where the run's section is appended (None: print only).
    results: Option<String>,
    note: Option<String>,
    /// Skip the extra conv row that writes conv3x3 as im2col + matmul in burn.
    no_im2col: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        latent: 32,
        width_scale: 0.5,
        reps: 3,
        warmup: 1,
        only: vec![],
        results: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md").to_string()),
        note: None,
        no_im2col: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--latent" => a.latent = val().parse().unwrap_or_else(|_| usage("--latent: integer")),
            "--width-scale" => a.width_scale = val().parse().unwrap_or_else(|_| usage("--width-scale: number")),
            "--reps" => a.reps = val().parse().unwrap_or_else(|_| usage("--reps: integer")),
            "--warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage("--warmup: integer")),
            "--only" => a.only = val().split(',').map(|s| s.trim().to_string()).collect(),
            "--results" => a.results = Some(val()),
            "--no-results" => a.results = None,
            "--note" => a.note = Some(val()),
            "--no-im2col" => a.no_im2col = true,
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    if a.reps == 0 {
        usage("--reps must be at least 1");
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("burn-compare: {msg}");
    }
    eprintln!(
        "usage: burn-compare [--latent 32] [--width-scale 0.5] [--reps 3] [--warmup 1]\n\
         \x20                   [--only linear,conv,group_norm,attention] [--no-im2col] [--results FILE | --no-results] [--note TEXT]"
    );
    std::process::exit(if msg.is_empty() { 0 } else { 2 })
}

fn kind(case: &KernelCase) -> &'static str {
    match case {
        KernelCase::Linear { .. } => "linear",
        KernelCase::Conv3x3 { .. } => "conv",
        KernelCase::GroupNorm { .. } => "group_norm",
        KernelCase::Attention { .. } => "attention",
    }
}

/// The same inputs `roentgen_web::bench::PreparedCase` uploads (a copy of its private
/// `values`): checked against our output below, so a drift would show as disagreement.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0) - 1.0).collect()
}

fn weight_values(n: usize) -> Vec<f32> {
    values(n, 3).iter().map(|x| x * 0.05).collect()
}

/// Permutes a row-major tensor: `out[j...] = x[i...]` with out's axis `k` = x's axis `perm[k]`.
fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let mut out = Vec::with_capacity(x.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..x.len() {
        out.push(x[idx.iter().zip(&out_strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn rel_l2(a: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(a.len(), reference.len(), "output sizes differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &r) in a.iter().zip(reference) {
        num += ((x - r) as f64).powi(2);
        den += (r as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// One case on burn's side: its inputs in burn's layout, and the op.
enum BurnCase {
    Linear { x: Tensor<2>, w: Tensor<2>, b: Tensor<1> },
    Conv { x: Tensor<4>, w: Tensor<4>, b: Tensor<1> },
    /// conv3x3 written with burn's tensor ops: im2col by pad + 9 slices + cat, then one
    /// batched matmul (what a burn-only engine could do where `conv2d` is slow).
    ConvIm2col { x: Tensor<4>, w: Tensor<3>, b: Tensor<3> },
    GroupNorm { x: Tensor<3>, norm: GroupNorm },
    Attention { q: Tensor<4>, k: Tensor<4>, v: Tensor<4> },
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

impl BurnCase {
    /// `sign` multiplies the first input: the warm-up runs on `-x`, so that a timed run
    /// whose kernel silently did nothing cannot pass the check by reading back a
    /// stale buffer that holds the warm-up's (correct-looking) result.
    fn new(case: KernelCase, device: &Device, sign: f32, im2col: bool) -> BurnCase {
        let first = |n: usize| -> Vec<f32> { values(n, 1).into_iter().map(|v| v * sign).collect() };
        match case {
            KernelCase::Linear { m, k, n } => BurnCase::Linear {
                x: tensor(first(m * k), [m, k], device),
                // Ours [N, K] (PyTorch's); burn's `linear` takes [K, N] (burn::nn::Linear's).
                w: tensor(permute(&weight_values(n * k), &[n, k], &[1, 0]), [k, n], device),
                b: tensor(values(n, 2), [n], device),
            },
            KernelCase::Conv3x3 { b, h, w, c, cout } if im2col => BurnCase::ConvIm2col {
                x: tensor(permute(&first(b * h * w * c), &[b, h, w, c], &[0, 3, 1, 2]), [b, c, h, w], device),
                // Our [Cout, 3, 3, Cin] flattened is [Cout, (tap, Cin)]: the im2col row order.
                w: tensor(weight_values(cout * 9 * c), [1, cout, 9 * c], device),
                b: tensor(values(cout, 2), [1, cout, 1], device),
            },
            KernelCase::Conv3x3 { b, h, w, c, cout } => BurnCase::Conv {
                // NHWC -> NCHW; weight [Cout, 3, 3, Cin] -> [Cout, Cin, 3, 3].
                x: tensor(permute(&first(b * h * w * c), &[b, h, w, c], &[0, 3, 1, 2]), [b, c, h, w], device),
                w: tensor(permute(&weight_values(cout * 9 * c), &[cout, 3, 3, c], &[0, 3, 1, 2]), [cout, c, 3, 3], device),
                b: tensor(values(cout, 2), [cout], device),
            },
            KernelCase::GroupNorm { b, p, c } => BurnCase::GroupNorm {
                // [B, P, C] -> [B, C, P] (burn's GroupNorm wants channels second).
                x: tensor(permute(&first(b * p * c), &[b, p, c], &[0, 2, 1]), [b, c, p], device),
                norm: GroupNorm {
                    gamma: Some(Param::from_tensor(tensor(values(c, 2), [c], device))),
                    beta: Some(Param::from_tensor(tensor(values(c, 3), [c], device))),
                    num_groups: 32,
                    num_channels: c,
                    epsilon: 1e-5,
                    affine: true,
                },
            },
            KernelCase::Attention { b, n, nk, heads, d } => {
                // [B, N, H*D] -> [B, H, N, D].
                let bhnd = |len: usize, data: Vec<f32>| {
                    tensor(permute(&data, &[b, len, heads, d], &[0, 2, 1, 3]), [b, heads, len, d], device)
                };
                BurnCase::Attention { q: bhnd(n, first(b * n * heads * d)), k: bhnd(nk, values(b * nk * heads * d, 2)), v: bhnd(nk, values(b * nk * heads * d, 3)) }
            }
        }
    }

    /// Runs the op and reads the result back (burn's layout). `try_into_data()` alone is
    /// not enough: in burn 0.22.1 it returns a `TensorData` over lazy storage before the
    /// kernel has finished (a 2048x160x1280 matmul "took" 0.5 ms); `as_slice()` waits
    /// for the bytes, so it is inside the timed region, like our `gpu.read`.
    fn run(&self) -> Result<TensorData, String> {
        match self {
            BurnCase::Linear { x, w, b } => read(module::linear(x.clone(), w.clone(), Some(b.clone()))),
            BurnCase::Conv { x, w, b } => {
                read(module::conv2d(x.clone(), w.clone(), Some(b.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)))
            }
            BurnCase::ConvIm2col { x, w, b } => {
                let [n, c, h, wd] = x.dims();
                let xp = x.clone().pad([(1, 1), (1, 1)], 0.0);
                let taps: Vec<Tensor<4>> =
                    (0..9).map(|t| xp.clone().slice([0..n, 0..c, t / 3..t / 3 + h, t % 3..t % 3 + wd])).collect();
                let cols = Tensor::cat(taps, 1).reshape([n, 9 * c, h * wd]);
                let cout = w.dims()[1];
                read((w.clone().matmul(cols) + b.clone()).reshape([n, cout, h, wd]))
            }
            // Ours fuses SiLU into the group norm in this case; burn's fusion may too.
            BurnCase::GroupNorm { x, norm } => read(activation::silu(norm.forward(x.clone()))),
            // scale None = 1/sqrt(D), as ours; a set scale would send burn to its unfused
            // fallback.
            BurnCase::Attention { q, k, v } => {
                read(module::attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default()))
            }
        }
    }

    /// Burn's output reordered to our layout.
    fn to_ours(&self, case: KernelCase, data: TensorData) -> Vec<f32> {
        let v: Vec<f32> = data.try_into_vec().expect("f32 output");
        match case {
            KernelCase::Linear { .. } => v,
            KernelCase::Conv3x3 { b, h, w, cout, .. } => permute(&v, &[b, cout, h, w], &[0, 2, 3, 1]),
            KernelCase::GroupNorm { b, p, c } => permute(&v, &[b, c, p], &[0, 2, 1]),
            KernelCase::Attention { b, n, heads, d, .. } => permute(&v, &[b, heads, n, d], &[0, 2, 1, 3]),
        }
    }
}

/// Reads a result back and waits for its bytes (see `BurnCase::run`).
fn read<const D: usize>(y: Tensor<D>) -> Result<TensorData, String> {
    let data = y.try_into_data().map_err(|e| format!("{e:?}"))?;
    data.as_slice::<f32>().map_err(|e| format!("reading the result: {e:?}"))?;
    Ok(data)
}

fn median(t: &mut [f64]) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into())
}

/// Times burn on one case: `warmup` untimed runs on `warm` (negated input), then `reps`
/// timed runs on `bc`, each checked (after its timer stopped) against `reference` (our
/// output, in our layout). Returns the times, the largest relative L2 error over the
/// timed runs, and the first warm-up's time (with any autotuning).
fn time_burn(
    warm: &BurnCase,
    bc: &BurnCase,
    case: KernelCase,
    warmup: usize,
    reps: usize,
    reference: Option<&[f32]>,
) -> Result<(Vec<f64>, Option<f64>, f64), String> {
    let t0 = Instant::now();
    warm.run()?;
    let first = t0.elapsed().as_secs_f64();
    for _ in 1..warmup {
        warm.run()?;
    }
    let mut times = Vec::with_capacity(reps);
    let mut worst: Option<f64> = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        let out = bc.run()?;
        times.push(t0.elapsed().as_secs_f64());
        eprintln!("    burn run: {:.1} ms", times.last().unwrap() * 1e3);
        if let Some(r) = reference {
            let e = rel_l2(&bc.to_ours(case, out), r);
            worst = Some(match worst {
                Some(w) if !(e > w) => w,
                _ => e,
            });
        }
    }
    Ok((times, worst, first))
}

fn burn_features() -> String {
    let mut f = vec!["std", "wgpu"];
    if cfg!(feature = "autotune") {
        f.push("autotune");
    }
    if cfg!(feature = "fusion") {
        f.push("fusion");
    }
    if cfg!(feature = "vulkan") {
        f.push("vulkan");
    }
    format!("[{}]", f.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "))
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (days-to-civil, H. Hinnant).
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

fn main() {
    let a = parse_args();
    let base = (320.0 * a.width_scale).round() as usize;
    let started = Instant::now();

    let gpu = pollster::block_on(Gpu::new()).unwrap_or_else(|e| {
        eprintln!("burn-compare: our GPU context: {e}");
        std::process::exit(1)
    });
    let ours_adapter = format!("{} ({})", gpu.info.adapter_name, gpu.info.backend);

    let (device, setup) = burn::tensor::Device::wgpu_options().init_with_setup().unwrap_or_else(|e| {
        eprintln!("burn-compare: burn's wgpu device: {e:?}");
        std::process::exit(1)
    });
    let info = setup.adapter.get_info();
    let burn_adapter = format!("{} ({:?})", info.name, setup.backend);
    let compiler = if cfg!(feature = "vulkan") && setup.backend == burn::tensor::wgpu::wgpu::Backend::Vulkan { "SPIR-V" } else { "WGSL" };
    let features = burn_features();
    let command = std::iter::once("burn-compare".to_string())
        .chain(std::env::args().skip(1).map(|x| if x.contains(' ') { format!("'{x}'") } else { x }))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("ours: {ours_adapter}; burn: {burn_adapter}, {compiler}, features {features}");

    let mut rows = Vec::new();
    let mut disagreements = Vec::new();
    for case in unet_cases(a.latent, base) {
        if !a.only.is_empty() && !a.only.iter().any(|k| k == kind(&case)) {
            continue;
        }
        let name = case.name();
        eprintln!("{name}");

        // Ours.
        let prepared = PreparedCase::new(&gpu, case, WeightFormat::F32).expect("prepare our case");
        let now = move || started.elapsed().as_secs_f64();
        let ours = pollster::block_on(time_case(&gpu, &prepared, a.reps, &now)).map(|t| t[t.len() / 2]);
        let ours_out = pollster::block_on(gpu.read(&prepared.run(&gpu)));
        drop(prepared);
        gpu.trim();
        match &ours {
            Ok(t) => eprintln!("  ours: {:.1} ms", t * 1e3),
            Err(e) => eprintln!("  ours: failed: {e}"),
        }

        // Burn: its conv2d op, and for conv also the same conv written as im2col + matmul.
        let reference = ours_out.as_ref().ok().map(|v| v.as_slice());
        let variants: &[bool] = if kind(&case) == "conv" && !a.no_im2col { &[false, true] } else { &[false] };
        for &im2col in variants {
            let name = if im2col { format!("{name} (burn: im2col + matmul)") } else { name.clone() };
            if im2col {
                eprintln!("  burn as im2col + matmul:");
            }
            let burn = catch_unwind(AssertUnwindSafe(|| {
                let warm = BurnCase::new(case, &device, -1.0, im2col);
                let bc = BurnCase::new(case, &device, 1.0, im2col);
                time_burn(&warm, &bc, case, a.warmup, a.reps, reference).map(|(mut t, err, first)| (median(&mut t), err, first))
            }))
            .unwrap_or_else(|e| Err(format!("panicked: {}", panic_text(e))));
            let (burn_ms, err) = match burn {
                Ok((t, err, first)) => {
                    eprintln!("  burn: {:.1} ms (first warm-up run, with any autotuning: {:.2} s)", t * 1e3, first);
                    (Ok(t), err)
                }
                Err(e) => {
                    eprintln!("  burn: failed: {e}");
                    (Err(e), None)
                }
            };
            let agreement = match err {
                Some(r) => {
                    if !(r < 1e-3) {
                        disagreements.push(format!("{name}: relative L2 {r:.2e}"));
                    }
                    format!("{r:.1e}")
                }
                None => "-".into(),
            };
            let fmt_ms = |r: &Result<f64, String>| match r {
                Ok(t) => format!("{:.1}", t * 1e3),
                Err(e) => format!("failed: {}", e.lines().next().unwrap_or("").chars().take(80).collect::<String>()),
            };
            let ours_ms = ours.as_ref().map_err(|e| e.to_string()).cloned();
            let ratio = match (&ours_ms, &burn_ms) {
                (Ok(o), Ok(b)) => format!("{:.2}", b / o),
                _ => "-".into(),
            };
            let gflops = |r: &Result<f64, String>| r.as_ref().map(|t| format!("{:.1}", case.flops() / t / 1e9)).unwrap_or("-".into());
            rows.push(format!(
                "| {name} | {} | {} | {ratio} | {} | {} | {agreement} |",
                fmt_ms(&ours_ms),
                fmt_ms(&burn_ms),
                gflops(&ours_ms),
                gflops(&burn_ms)
            ));
        }
    }

    let mut table = String::new();
    table += "| case | ours (ms) | burn (ms) | burn/ours | ours GFLOP/s | burn GFLOP/s | rel. L2 |\n";
    table += "| --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &rows {
        table += r;
        table += "\n";
    }
    println!("\n{table}");
    if !disagreements.is_empty() {
        println!("DISAGREEMENT (relative L2 >= 1e-3):");
        for d in &disagreements {
            println!("  {d}");
        }
    }

    if let Some(path) = &a.results {
        let mut section = format!("\n## {} — latent {}, UNet width {base}, {} reps\n\n", now_utc(), a.latent, a.reps);
        section += &format!("- command: `{command}`\n");
        section += &format!("- burn 0.22.1 features: `{features}`, shaders compiled from {compiler}\n");
        section += &format!("- adapter: burn {burn_adapter}; ours {ours_adapter}\n");
        section += &format!(
            "- medians of {} timed runs after {} warm-up, each run = one op + read-back to the CPU; layouts: ours NHWC / `[B, N, H*D]` / linear weight `[N, K]`, burn NCHW / `[B, H, N, D]` / `[K, N]` (converted on the CPU, untimed)\n",
            a.reps, a.warmup
        );
        if let Some(n) = &a.note {
            section += &format!("- note: {n}\n");
        }
        section += &format!("- total wall time {:.0} s\n\n", started.elapsed().as_secs_f64());
        section += &table;
        if !disagreements.is_empty() {
            section += "\nDisagreements (relative L2 >= 1e-3): ";
            section += &disagreements.join("; ");
            section += "\n";
        }
        let mut text = std::fs::read_to_string(path).unwrap_or_else(|_| {
            "# burn 0.22.1 vs our hand-written WGSL kernels\n\nEach section below was appended by one run of `burn-compare` (see README.md).\n".to_string()
        });
        text += &section;
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("burn-compare: writing {path}: {e}");
        } else {
            eprintln!("appended to {path}");
        }
    }
    if !disagreements.is_empty() {
        std::process::exit(3);
    }
}
