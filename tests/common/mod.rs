//! Shared test helpers: one GPU context per test binary (lavapipe natively), a small
//! deterministic RNG, and error measures that name the worst element.
#![allow(dead_code)]

use std::sync::OnceLock;

use roentgen_web::gpu::{Gpu, KernelPath};

/// The GPU all tests of a binary share. Natively this is whatever wgpu picks; CI has
/// only lavapipe (Mesa's CPU Vulkan driver), installed by `.ci/run`.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = pollster::block_on(Gpu::new())
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        eprintln!(
            "adapter: {} ({}), shader-f16 {}, subgroups {}",
            g.info.adapter_name, g.info.backend, g.info.shader_f16, g.info.subgroups
        );
        g
    })
}

/// The same adapter with the subgroup kernels switched off: the portable path that
/// browsers without subgroups (and GPUs with varying subgroup sizes) take.
pub fn gpu_portable() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut g = pollster::block_on(Gpu::new())
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        g.info.subgroup_size = None;
        g.info.path = g.info.fallback();
        g
    })
}

/// A context that claims 4 KiB storage bindings, so that ops split maps into channel
/// slices at test sizes.
/// Both kernel paths.
pub fn gpus_small_bindings() -> Vec<(&'static str, &'static Gpu)> {
    static GPUS: OnceLock<Vec<(&'static str, Gpu)>> = OnceLock::new();
    GPUS.get_or_init(|| {
        [("sliced portable", true), ("sliced subgroup", false)]
            .into_iter()
            .map(|(name, portable)| {
                let mut g = pollster::block_on(Gpu::new())
                    .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
                g.info.max_storage_binding = 4 << 10;
                if portable {
                    g.info.subgroup_size = None;
                    g.info.path = g.info.fallback();
                }
                (name, g)
            })
            .collect()
    })
    .iter()
    .map(|(n, g)| (*n, g))
    .collect()
}

/// The portable path as a GPU (not a CPU driver) takes it: barrier reductions where
/// `gpu_portable` on lavapipe takes the barrier-free forms.
pub fn gpu_portable_gpu_style() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut g = pollster::block_on(Gpu::new())
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        g.info.subgroup_size = None;
        g.info.software = false;
        g.info.path = KernelPath::Tiled;
        g
    })
}

/// The CPU-driver form with its subgroup broadcasts (what SwiftShader's 4 lanes run in
/// Chromium; here over lavapipe's 8), its tall form from 1 MFLOP: None where the
/// adapter has no subgroups of a size it takes.
pub fn gpu_portable_broadcast() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut g = pollster::block_on(Gpu::new())
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        g.info.software = true;
        g.info.path = KernelPath::CpuDriver;
        // the tall (16-row, every format) form from 1 MFLOP: the kernel tests' tall
        // rounds reach it at shapes a reference computes quickly; their small ones keep
        // the 8-row form
        g.info.cpu_tall_flops = 1 << 20;
        g.info.cpu_broadcast().is_some().then_some(g)
    })
    .as_ref()
}

/// Every kernel path this machine can run.
pub fn gpus() -> Vec<(&'static str, &'static Gpu)> {
    let mut v = vec![
        ("portable", gpu_portable()),
        ("portable (GPU-style)", gpu_portable_gpu_style()),
    ];
    if let Some(g) = gpu_portable_broadcast() {
        v.push(("portable broadcast", g));
    }
    if gpu().info.subgroup_size.is_some() {
        v.push(("subgroup", gpu()));
    }
    v
}

pub fn read_on(g: &Gpu, t: &roentgen_web::gpu::Tensor) -> Vec<f32> {
    pollster::block_on(g.read(t)).expect("read back")
}

pub fn read(t: &roentgen_web::gpu::Tensor) -> Vec<f32> {
    read_on(gpu(), t)
}

/// xorshift64*: fresh shapes per run (seed printed, `KERNEL_SEED` repeats one).
pub struct Rng(u64);

impl Rng {
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("KERNEL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: KERNEL_SEED={seed}");
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately normal (sum of uniforms), scaled.
    pub fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 1.732 * scale)
            .collect()
    }
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.range(0, v.len() - 1)]
    }
}

/// Relative L2 error `|a - b| / |b|`, with the worst element's index and values.
pub fn rel_l2(got: &[f32], want: &[f32]) -> (f64, usize, f32, f32) {
    assert_eq!(got.len(), want.len(), "length");
    let (mut num, mut den) = (0f64, 0f64);
    let (mut worst, mut wi) = (-1f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = if g.is_nan() {
            f64::INFINITY
        } else {
            (g as f64 - w as f64).abs()
        };
        num += d * d;
        den += (w as f64) * (w as f64);
        if d > worst {
            worst = d;
            wi = i;
        }
    }
    ((num / den.max(1e-30)).sqrt(), wi, got[wi], want[wi])
}

/// Asserts `rel_l2 <= tol`, naming the worst element; NaN (a poisoned, unwritten
/// element) always fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    if let Some(i) = got.iter().position(|v| v.is_nan()) {
        panic!(
            "{what}: element {i} is NaN: never written (or NaN computed); want {}",
            want[i]
        );
    }
    let (e, i, g, w) = rel_l2(got, want);
    assert!(
        e <= tol,
        "{what}: relative L2 error {e:.3e} > {tol:.0e}; worst element {i}: got {g}, want {w}"
    );
    eprintln!("{what}: rel L2 {e:.2e}");
}

/// A golden tensor of `tests/fixtures/golden/{name}.safetensors`, as f32.
pub fn golden(name: &str, tensor: &str) -> Vec<f32> {
    fixture_tensor(&format!("golden/{name}.safetensors"), tensor).1
}

/// A tensor of the safetensors file `tests/fixtures/{file}`: its shape and values as f32.
pub fn fixture_tensor(file: &str, tensor: &str) -> (Vec<usize>, Vec<f32>) {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let index = roentgen_web::weights::WeightIndex::parse(&path, &bytes).unwrap();
    let shape = index
        .get(tensor)
        .unwrap_or_else(|e| panic!("{path} has no tensor {tensor}: {e}"))
        .shape
        .clone();
    let values = index.read_f32(&bytes, tensor, &shape).unwrap();
    (shape, values)
}

/// PSNR in dB of images in [0, 1].
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}

/// The fixtures' reference request (tools/make_fixtures.py): 128x128, 10 steps,
/// guidance 4, seed 0.
pub fn request(
    scheduler: roentgen_web::schedulers::SchedulerKind,
) -> roentgen_web::pipeline::GenerateRequest {
    roentgen_web::pipeline::GenerateRequest {
        prompt: "Small right-sided pleural effusion.".into(),
        negative_prompt: String::new(),
        steps: 10,
        guidance: 4.0,
        seed: 0,
        scheduler,
        width: 128,
        height: 128,
        count: 1,
    }
}

/// Plans `req` against `pipe` and runs it: the images (none when cancelled).
pub fn generate(
    pipe: &roentgen_web::pipeline::Pipeline,
    gpu: &roentgen_web::gpu::Gpu,
    req: impl Into<roentgen_web::generation::Request>,
    on_call: &mut dyn FnMut(roentgen_web::pipeline::Progress) -> roentgen_web::pipeline::Control,
) -> roentgen_web::Result<Vec<roentgen_web::pipeline::GeneratedImage>> {
    let plan = pipe.plan(req)?;
    Ok(pollster::block_on(pipe.generate(gpu, &plan, on_call))?.images)
}

/// `req` with an edit (image-to-image, or inpainting with a mask) and, when `maps`, per-word
/// attention maps.
pub fn edit_request(
    req: roentgen_web::pipeline::GenerateRequest,
    rgb: &[f32],
    mask: Option<&[bool]>,
    strength: f32,
    maps: bool,
) -> roentgen_web::generation::Request {
    let (width, height) = (req.width, req.height);
    let mut r: roentgen_web::generation::Request = req.into();
    r.edit = Some(roentgen_web::generation::EditRequest {
        width,
        height,
        rgb: rgb.to_vec(),
        mask: mask.map(<[bool]>::to_vec),
        strength: Some(strength),
        inversion: None,
    });
    r.attention_maps = maps;
    r
}

/// Runs dicom3tools' IOD validator `dciodvfy` on a DICOM file and fails on any line it
/// starts with `Error`; its warnings are printed. The test command (scripts/test.sh)
/// installs dicom3tools, so a missing `dciodvfy` fails with a sentence saying so, unless
/// `ROENTGEN_SKIP_DCIODVFY=1` asks to skip the check (a machine without apt).
pub fn assert_dciodvfy_accepts(path: &std::path::Path) {
    let out = match std::process::Command::new("dciodvfy").arg(path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("ROENTGEN_SKIP_DCIODVFY").as_deref() == Ok("1") {
                eprintln!("dciodvfy not checked: ROENTGEN_SKIP_DCIODVFY=1");
                return;
            }
            panic!(
                "dciodvfy is not on PATH: install dicom3tools (apt-get install dicom3tools; \
                 scripts/test.sh does), or set ROENTGEN_SKIP_DCIODVFY=1 to skip this check"
            );
        }
        Err(e) => panic!("dciodvfy could not be run: {e}"),
    };
    // it writes its verdict to stderr and the IOD's name to stdout
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dciodvfy {}:\n{said}", path.display());
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(
        errors.is_empty(),
        "dciodvfy finds {} error(s) in {}:\n{}",
        errors.len(),
        path.display(),
        errors.join("\n")
    );
}
