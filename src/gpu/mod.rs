//! The GPU context: one adapter, device and queue, a pipeline cache, a buffer pool and a
//! recorder that batches dispatches into few submissions.
//!
//! Everything here is async where the browser demands it (device creation, reading
//! results back) and never blocks on wasm32. Natively, [`Gpu::read`] polls the device
//! while it waits, so `pollster::block_on` is enough to drive it.

mod host;
mod oneshot;
mod pool;
mod tensor;

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub use host::HostWeight;
pub use pool::MemoryStats;
pub use tensor::{Tensor, Weight, WeightFormat};

use crate::error::{Error, Result};
use pool::{BufferPool, PooledBuffer};

/// Which form of the kernels an adapter runs: decided once, in [`GpuInfo`], from what
/// the adapter is and has; every op follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Subgroups of this one fixed size: the subgroup GEMM (for shapes it takes), the
    /// flash attention, subgroup LayerNorm and softmax.
    Subgroup(u32),
    /// A CPU driver without usable subgroups (Chromium's SwiftShader, lavapipe with
    /// `ROENTGEN_NO_SUBGROUPS=1`): register-tiled GEMMs generated per tile shape,
    /// barrier-free norms and softmax (barriers are costly there).
    CpuDriver,
    /// A GPU without fixed-size subgroups (browsers on most real GPUs): the
    /// workgroup-tiled GEMM and barrier reductions.
    Tiled,
}

impl KernelPath {
    /// The path for an adapter: `subgroup_size` as [`GpuInfo`] has it.
    pub fn for_adapter(subgroup_size: Option<u32>, software: bool) -> KernelPath {
        match (subgroup_size, software) {
            (Some(sg), _) => KernelPath::Subgroup(sg),
            (None, true) => KernelPath::CpuDriver,
            (None, false) => KernelPath::Tiled,
        }
    }
}

/// What the adapter can do that matters to our kernels.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub adapter_name: String,
    pub backend: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// The subgroup size when the adapter has subgroups of one fixed size (kernels
    /// specialised on it); `None` otherwise.
    pub subgroup_size: Option<u32>,
    /// A CPU driver (lavapipe, Chromium's SwiftShader: WebGPU's fallback adapter), where
    /// workgroup barriers are costly: some portable kernels take a barrier-free form.
    pub software: bool,
    /// The kernels' form, from `subgroup_size` and `software`.
    pub path: KernelPath,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_storage: u32,
    /// Environment switches, read once here (not per dispatch):
    /// `ROENTGEN_CHUNKED_ATTENTION=1`: chunked GEMM attention even where the flash
    /// kernel runs.
    pub chunked_attention: bool,
    /// `ROENTGEN_CHECKED_SHADERS=1`: runtime bounds checks even in trusted kernels.
    pub checked_shaders: bool,
    /// `ROENTGEN_LOG_PIPELINES=1`: print each pipeline's compile time (native).
    pub log_pipelines: bool,
    /// `ROENTGEN_PROFILE_SHAPES=1`: `--profile` reports per kernel and workgroup grid
    /// instead of per kernel family.
    pub profile_shapes: bool,
    /// `ROENTGEN_NO_BROADCAST=1` (`roentgenNoBroadcast` in the browser): the CPU-driver
    /// GEMM without its subgroup broadcasts (see [`GpuInfo::cpu_broadcast`]).
    pub no_broadcast: bool,
    /// GEMMs of at least this many FLOPs take the CPU broadcast form's 16-row tiles
    /// (and quantized weights its broadcasts); smaller ones keep 8 rows and broadcast
    /// f32 weights only. [`CPU_TALL_FLOPS`]; tests lower it to reach the tall form on
    /// small shapes.
    pub cpu_tall_flops: u64,
}

/// The default [`GpuInfo::cpu_tall_flops`]: 2^26 (67 MFLOP). The 16-row kernels take
/// twice as long to compile (SwiftShader: 0.6-1.2 s against 0.3-0.5 s each), which
/// every page load pays for every kernel: with them on every shape the browser tests
/// took 948 s against 443 s. The half-width UNet's GEMMs at 32x32 latents are 0.1-0.9
/// GFLOP each; the tiny test UNet's (widths 16-32, 16x16 latents) at most 10 MFLOP.
pub const CPU_TALL_FLOPS: u64 = 1 << 26;

/// The largest subgroup each subgroup kernel takes (issue 23: fixed sizes 4 to 128
/// occur, SwiftShader 4, lavapipe 8, NVIDIA and Apple 32, AMD 64): the subgroup GEMM
/// runs 8 subgroups per workgroup and keeps 4·SG accumulators per lane (a workgroup of
/// at most 256 invocations, WebGPU's default limit); the row kernels and the flash
/// attention run 64-invocation workgroups of whole subgroups. Beyond these an op takes
/// its portable form ([`GpuInfo::path_for`]).
pub const GEMM_MAX_SUBGROUP: u32 = 32;
pub const ROWS_MAX_SUBGROUP: u32 = 64;
pub const FLASH_MAX_SUBGROUP: u32 = 64;
/// The smallest subgroup any subgroup kernel takes (the GEMM's 4-wide reads).
pub const MIN_SUBGROUP: u32 = 4;
/// The smallest subgroup worth the subgroup kernels on a CPU driver (measured: lavapipe's
/// 8 lanes beat its CPU-form kernels 1.9x, SwiftShader's 4 lose 2.6x).
pub const CPU_MIN_SUBGROUP: u32 = 8;

impl GpuInfo {
    /// The form for shapes the subgroup kernels do not take (unaligned K): the CPU
    /// driver's or the tiled one, by `software`.
    pub fn fallback(&self) -> KernelPath {
        KernelPath::for_adapter(None, self.software)
    }

    /// The lanes the CPU-driver GEMM shares its A loads across (a subgroup of 4 or 8
    /// lanes on a CPU driver that runs the CPU form: SwiftShader's 4, lavapipe's 8 when
    /// asked): each lane loads a different 4 values of a row and `subgroupBroadcast`
    /// hands them to the others, one gather instead of one per lane (see
    /// `shaders/gemm_cpu.wgsl`). The attention takes the subgroup flash kernel there
    /// too, several queries per lane. None elsewhere.
    pub fn cpu_broadcast(&self) -> Option<u32> {
        if self.path != KernelPath::CpuDriver || self.no_broadcast {
            return None;
        }
        self.subgroup_size.filter(|&sg| sg == 4 || sg == 8)
    }

    /// This adapter's form for a kernel whose subgroup form takes subgroups of at
    /// most `max` lanes: the subgroup form within it, the portable one beyond.
    pub fn path_for(&self, max: u32) -> KernelPath {
        match self.path {
            KernelPath::Subgroup(sg) if sg > max => self.fallback(),
            p => p,
        }
    }
}

/// Parameters of one dispatch live in a shared uniform buffer at this stride
/// (WebGPU's `minUniformBufferOffsetAlignment` is at most 256).
pub(crate) const PARAM_STRIDE: u64 = 256;
/// Dispatches recorded before the recorder submits on its own.
const BATCH_DISPATCHES: usize = 256;

/// A compiled kernel and the bind-group layout its WGSL declares.
struct Kernel {
    /// The spec's label (profiles, messages).
    label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// Storage bindings declared (1..=n), each bound on every dispatch.
    storage_bindings: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindingKind {
    Uniform,
    Read,
    ReadWrite,
}

/// The `@group(0) @binding(N) var<...>` declarations of a WGSL module, in order.
pub(crate) fn declared_bindings(wgsl: &str) -> Vec<(u32, BindingKind)> {
    let mut out = Vec::new();
    for line in wgsl.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let Some(at) = line.find("@binding(") else {
            continue;
        };
        let rest = &line[at + "@binding(".len()..];
        let Some(n) = rest.split(')').next().and_then(|n| n.trim().parse().ok()) else {
            continue;
        };
        let Some(var) = rest.find("var<") else {
            continue;
        };
        let space = &rest[var + 4..];
        let space = &space[..space.find('>').unwrap_or(space.len())];
        let kind = if space.starts_with("uniform") {
            BindingKind::Uniform
        } else if space.contains("read_write") {
            BindingKind::ReadWrite
        } else {
            BindingKind::Read
        };
        out.push((n, kind));
    }
    out.sort_by_key(|b| b.0);
    out
}

struct Dispatch {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    /// This dispatch's parameter block in the params buffer (a dynamic offset).
    offset: u32,
    workgroups: [u32; 3],
}

/// A bind group's identity: the kernel's layout and the storage buffers in binding
/// order (wgpu buffers compare and hash by identity). Binding 0, the parameter block,
/// is the same persistent buffer at a dynamic offset, so a UNet call's second step
/// finds every bind group of its first: weights live across calls, and the pool hands
/// the same buffers back for the same shapes.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    kernel: usize,
    buffers: Vec<wgpu::Buffer>,
}

/// Bind groups kept at most (cleared whole beyond it, and on [`Gpu::trim`]); a full
/// 512x512 UNet call binds a few hundred distinct sets.
const BIND_GROUP_CACHE: usize = 8192;

#[derive(Default)]
struct Recorder {
    dispatches: Vec<Dispatch>,
    /// Uniform words of each dispatch, `PARAM_STRIDE` bytes apart.
    params: Vec<u8>,
    /// One buffer for every batch's parameter blocks (each batch's `write_buffer` is
    /// ordered after the previous batch's submission, so reusing it is safe).
    params_buffer: Option<wgpu::Buffer>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// A kernel as a dispatch names it: a small typed value of its family (a `Copy`
/// struct or enum of flags, sizes and formats) holding everything its WGSL depends on.
/// The pipeline cache keys on the value itself, so a dispatch formats no text and
/// hashes no shader source: the [`KernelSpec`] (label, prelude, generated body) is
/// built only when the kernel is compiled.
pub trait KernelKey: Hash + Eq + Copy + Send + Sync + 'static {
    /// The kernel's text and settings; called on a cache miss (and by the contract
    /// checks), never per dispatch.
    fn spec(&self) -> KernelSpec;
}

/// A compute kernel's WGSL and settings, built from its [`KernelKey`].
pub struct KernelSpec {
    /// A readable name for profiles and logs, e.g. `gemm_tiled_conv_b1r0_64x64`.
    pub label: String,
    /// The kernel family's WGSL: a `shaders/` file, or text generated (unrolled) from one.
    pub body: Cow<'static, str>,
    /// WGSL prepended to the body: `const`s and small `fn`s that specialise it.
    pub prelude: String,
    /// A family's shared WGSL (a `shaders/` file), placed between the prelude and the
    /// body. "" for none.
    pub common: &'static str,
    pub entry: &'static str,
    /// Compile without runtime bounds checks. Only for kernels whose every index is
    /// provably in range given the shapes their caller asserts (the subgroup GEMM);
    /// `ROENTGEN_CHECKED_SHADERS=1` turns checks back on for debugging.
    pub trusted: bool,
}

impl KernelSpec {
    /// The WGSL handed to wgpu: the prelude, the family's shared text, then its body.
    pub fn wgsl(&self) -> String {
        format!("{}\n{}\n{}", self.prelude, self.common, self.body)
    }
}

/// Compiled kernels of one key type (a value of [`Pipelines`]).
type KernelsOf<K> = HashMap<K, Arc<Kernel>>;

/// Compiled kernels by key type, then by key: a [`KernelsOf`] per family's key type.
type Pipelines = HashMap<TypeId, Box<dyn Any + Send>>;

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    /// Compiled kernels by key type, then key.
    pipelines: Mutex<Pipelines>,
    pool: Arc<Mutex<BufferPool>>,
    recorder: Mutex<Recorder>,
    /// First uncaptured device error (validation, out of memory) or the device's loss,
    /// reported on the next read.
    error: Arc<Mutex<Option<Error>>>,
    /// Bound where a kernel's optional operand is absent.
    dummy: wgpu::Buffer,
    /// Tests: fill every new tensor with NaN so that an element a kernel fails to
    /// write shows up.
    poison: std::sync::atomic::AtomicBool,
    /// Memory planning: allocate every buffer as a real run does but record no
    /// dispatch and read back zeros (see [`Gpu::set_dry_run`]).
    dry_run: std::sync::atomic::AtomicBool,
    /// Benchmarks: record every dispatch as a real run does (pipelines, bind groups,
    /// parameters) and then drop it unsubmitted: the host's share alone, no kernel
    /// running on the same cores meanwhile (see [`Gpu::set_record_only`]).
    record_only: std::sync::atomic::AtomicBool,
    /// Tests: make a fresh bind group for every dispatch ([`Gpu::set_bind_group_cache`]).
    no_bind_group_cache: std::sync::atomic::AtomicBool,
    /// Floating-point operations dispatched (2 per multiply-add in GEMMs and attention).
    flops: std::sync::atomic::AtomicU64,
    /// Dispatches recorded (benchmarks: dispatches per UNet call).
    dispatches: std::sync::atomic::AtomicU64,
    /// Native profiling: when set, every dispatch runs alone and its wall time is
    /// added to its kernel's entry (key -> (count, seconds)).
    #[cfg(not(target_arch = "wasm32"))]
    profile: Mutex<Option<HashMap<String, (u32, f64)>>>,
}

impl Gpu {
    /// Creates the context on the best adapter, asking only for features and limits
    /// the adapter has.
    pub async fn new() -> Result<Gpu> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        Self::from_adapter(adapter).await
    }

    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let adapter_info = adapter.get_info();
        let available = adapter.features();
        let mut features = wgpu::Features::empty();
        // Feature-detected; every kernel also has a path without them.
        for f in [
            wgpu::Features::SHADER_F16,
            wgpu::Features::SUBGROUP,
            wgpu::Features::TIMESTAMP_QUERY,
        ] {
            if available.contains(f) {
                features |= f;
            }
        }
        // Natively, ask for the adapter's own limits: that lifts the 128 MiB binding
        // where the driver allows more. In the browser, ask for WebGPU's defaults (every
        // adapter has them; 128 MiB per storage binding, 256 MiB per buffer): the
        // engine splits larger maps itself, and a page that runs on the defaults runs on
        // every WebGPU browser.
        // `ROENTGEN_WEBGPU_LIMITS=1` asks natively for the browser's defaults too, to
        // check that a run fits them.
        #[cfg(not(target_arch = "wasm32"))]
        let limits = if std::env::var_os("ROENTGEN_WEBGPU_LIMITS").is_some() {
            wgpu::Limits::default()
        } else {
            adapter.limits()
        };
        #[cfg(target_arch = "wasm32")]
        let limits = wgpu::Limits::default();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("roentgen"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::NoDevice(e.to_string()))?;
        let error = Arc::new(Mutex::new(None::<Error>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                *s = Some(match e {
                    wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
                    _ => Error::Gpu(e.to_string()),
                });
            }
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, message| {
            // Dropping the device on purpose is no error.
            if reason != wgpu::DeviceLostReason::Destroyed {
                *slot.lock().unwrap() = Some(Error::DeviceLost(message));
            }
        });
        // In the browser wgpu 30 cannot ask for `subgroups` (its WebGPU backend does not
        // map the feature: gfx-rs/wgpu#10146, fix in #10220); www/worker.js adds it to
        // the device request where the adapter offers it and says whether the device
        // got it (`globalThis.roentgenSubgroups`). Drop this when wgpu maps it.
        #[cfg(target_arch = "wasm32")]
        let has_subgroups = features.contains(wgpu::Features::SUBGROUP) || web_subgroups();
        #[cfg(not(target_arch = "wasm32"))]
        let has_subgroups = features.contains(wgpu::Features::SUBGROUP);
        let subgroup_size = (has_subgroups
            && adapter_info.subgroup_min_size == adapter_info.subgroup_max_size
            && adapter_info.subgroup_min_size >= MIN_SUBGROUP
            && std::env::var_os("ROENTGEN_NO_SUBGROUPS").is_none())
        .then_some(adapter_info.subgroup_min_size);
        let software = adapter_info.device_type == wgpu::DeviceType::Cpu;
        // On a CPU driver, subgroups narrower than CPU_MIN_SUBGROUP lose to the
        // register-tiled CPU kernels (SwiftShader's 4 lanes: a half-width guided call
        // 77.4 s against 29.6 s, BENCHMARKS.md): those take the CPU form unless asked
        // (`ROENTGEN_SUBGROUP_KERNELS=1` natively, `roentgenSubgroupKernels = true` in the
        // browser: the tests of the subgroup kernels at 4 lanes).
        #[cfg(not(target_arch = "wasm32"))]
        let force = std::env::var_os("ROENTGEN_SUBGROUP_KERNELS").is_some();
        #[cfg(target_arch = "wasm32")]
        let force = web_flag("roentgenSubgroupKernels");
        let usable = subgroup_size.filter(|&sg| force || !software || sg >= CPU_MIN_SUBGROUP);
        let info = GpuInfo {
            path: KernelPath::for_adapter(usable, software),
            adapter_name: adapter_info.name.clone(),
            backend: format!("{:?}", adapter_info.backend),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: has_subgroups,
            subgroup_size,
            software,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            chunked_attention: std::env::var_os("ROENTGEN_CHUNKED_ATTENTION").is_some(),
            checked_shaders: std::env::var_os("ROENTGEN_CHECKED_SHADERS").is_some(),
            log_pipelines: std::env::var_os("ROENTGEN_LOG_PIPELINES").is_some(),
            profile_shapes: std::env::var_os("ROENTGEN_PROFILE_SHAPES").is_some(),
            #[cfg(not(target_arch = "wasm32"))]
            no_broadcast: std::env::var_os("ROENTGEN_NO_BROADCAST").is_some(),
            #[cfg(target_arch = "wasm32")]
            no_broadcast: web_flag("roentgenNoBroadcast"),
            cpu_tall_flops: CPU_TALL_FLOPS,
        };
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Gpu {
            poison: Default::default(),
            dry_run: Default::default(),
            record_only: Default::default(),
            no_bind_group_cache: Default::default(),
            flops: Default::default(),
            dispatches: Default::default(),
            #[cfg(not(target_arch = "wasm32"))]
            profile: Mutex::new(None),
            dummy,
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(BufferPool::new(
                limits.max_buffer_size,
                limits.max_storage_buffer_binding_size,
            ))),
            recorder: Mutex::new(Recorder::default()),
            error,
        })
    }

    /// Bytes of GPU memory held by weights and activations, now and at the peak.
    pub fn memory(&self) -> MemoryStats {
        self.pool.lock().unwrap().stats()
    }

    pub fn reset_peak_memory(&self) {
        self.pool.lock().unwrap().reset_peak();
    }

    pub(crate) fn dummy(&self) -> &wgpu::Buffer {
        &self.dummy
    }

    /// Frees the pooled buffers no tensor uses.
    pub fn trim(&self) {
        self.flush();
        // bind groups name buffers that may be gone now (released weights)
        self.recorder.lock().unwrap().bind_groups.clear();
        self.pool.lock().unwrap().trim();
    }

    /// Whether recorded dispatches reuse bind groups made for the same kernel and
    /// buffers (default). Off: every dispatch makes its own, as before (tests compare).
    pub fn set_bind_group_cache(&self, on: bool) {
        self.no_bind_group_cache
            .store(!on, std::sync::atomic::Ordering::Relaxed);
    }

    fn cache_bind_groups(&self) -> bool {
        !self
            .no_bind_group_cache
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pipeline<K: KernelKey>(&self, key: &K) -> Arc<Kernel> {
        // The typed key is everything the compiled kernel depends on (see KernelKey):
        // two hash lookups, no text.
        let mut cache = self.pipelines.lock().unwrap();
        let of_type = cache
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(KernelsOf::<K>::new()))
            .downcast_mut::<KernelsOf<K>>()
            .expect("pipelines are filed by their key's type");
        if let Some(p) = of_type.get(key) {
            return p.clone();
        }
        let spec = key.spec();
        let source = spec.wgsl();
        // The bind-group layout is the one the WGSL declares, every binding of it, so
        // a kernel never has to touch a binding it does not use to keep it in an
        // automatic layout.
        let bindings = declared_bindings(&source);
        let storage_bindings = bindings
            .iter()
            .filter(|b| b.1 != BindingKind::Uniform)
            .count();
        assert!(
            bindings
                .iter()
                .all(|b| (b.1 == BindingKind::Uniform) == (b.0 == 0)),
            "kernel {}: the parameter block is binding 0 and the only uniform",
            spec.label
        );
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        BindingKind::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    // the parameter block: one persistent buffer, a dynamic offset
                    // per dispatch (see BindKey)
                    has_dynamic_offset: kind == BindingKind::Uniform,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&spec.label),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&spec.label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        // Browsers want subgroup builtins declared (`enable subgroups;`); naga 30 does
        // not implement the directive natively (it needs none), and WGSL reaches the
        // browser unchanged. Tint's uniformity analysis also rejects a shuffle after a
        // branch on the invocation index (the GEMM's early return for a whole subgroup
        // past N, uniform in fact but not provably so): the subgroup_uniformity rule is
        // turned off, as the kernels' own design guarantees it.
        #[cfg(target_arch = "wasm32")]
        let source = if self.info.subgroup_size.is_some() && source.contains("@builtin(subgroup") {
            format!("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n{source}")
        } else {
            source
        };
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&spec.label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = if spec.trusted && !self.info.checked_shaders {
            // SAFETY: `trusted` kernels index only within bounds established by their
            // Rust callers' shape assertions (see KernelSpec::trusted). Natively this
            // drops naga's per-access bounds checks (about 20 % of the GEMM's time on
            // lavapipe); browsers keep their own checks whatever we ask.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            self.device.create_shader_module(desc)
        };
        #[cfg(not(target_arch = "wasm32"))]
        let t0 = std::time::Instant::now();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&spec.label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        #[cfg(not(target_arch = "wasm32"))]
        if self.info.log_pipelines {
            eprintln!(
                "pipeline {}: {:.3} s",
                spec.label,
                t0.elapsed().as_secs_f64()
            );
        }
        let kernel = Arc::new(Kernel {
            label: spec.label,
            pipeline,
            layout,
            storage_bindings,
        });
        of_type.insert(*key, kernel.clone());
        kernel
    }

    /// Allocates an uninitialised f32 tensor from the pool.
    pub fn empty(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let buf = self.alloc((n.max(1) * 4) as u64);
        let t = Tensor::new(buf, shape.to_vec());
        if self.poison.load(std::sync::atomic::Ordering::Relaxed) {
            self.fill(&t, f32::NAN);
        }
        t
    }

    /// FLOPs of the GEMM and attention kernels dispatched since the last call (for
    /// benchmarks: counted from the shapes, not measured).
    pub fn take_flops(&self) -> u64 {
        self.flops.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Dispatches recorded since the last call (benchmarks).
    pub fn take_dispatches(&self) -> u64 {
        self.dispatches
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_flops(&self, n: u64) {
        self.flops
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tests: poison (NaN-fill) every tensor created from now on.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Memory planning: from now on buffers are allocated exactly as a real run
    /// allocates them (every size is known from shapes before any kernel runs, and no
    /// allocation depends on values), but no kernel is recorded, nothing is uploaded and
    /// reads return zeros. A full-size generation's peak memory is then known in seconds
    /// on a CPU driver that needs an hour to run it; `tests/memory.rs` checks that a
    /// dry and a real generation report the same peak.
    pub fn set_dry_run(&self, on: bool) {
        self.flush();
        self.dry_run.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Benchmarks: from now on, recorded dispatches are dropped instead of submitted
    /// (results are garbage): what recording costs the host, measured alone.
    pub fn set_record_only(&self, on: bool) {
        self.flush();
        self.record_only
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn dry(&self) -> bool {
        self.dry_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn alloc(&self, bytes: u64) -> PooledBuffer {
        let bytes = self.within_limit("maxBufferSize", self.info.max_buffer_size, bytes);
        BufferPool::get(&self.pool, &self.device, bytes)
    }

    /// `bytes`, or where it is over a device limit, a small size and the limit recorded
    /// as the error the next read reports (the browser would only say "validation
    /// error"; this says which limit and by how much).
    fn within_limit(&self, limit: &'static str, have: u64, bytes: u64) -> u64 {
        if bytes <= have {
            return bytes;
        }
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(Error::Limit {
                limit,
                have,
                need: bytes,
            });
        }
        256
    }

    /// Uploads f32 values as a tensor.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!(
                "upload of {} values into shape {:?}",
                data.len(),
                shape
            )));
        }
        let t = self.empty(shape);
        if !data.is_empty() && !self.dry() {
            // Pending dispatches may still read an earlier tenant of this pooled buffer.
            self.flush();
            self.queue
                .write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }

    /// Records one dispatch. `bindings` are storage buffers in binding order 1..;
    /// binding 0 is the uniform block `params` (a `repr(C)` struct mirroring the
    /// kernel's WGSL `Params`, or plain u32/f32 words).
    pub fn dispatch<K: KernelKey, P: bytemuck::NoUninit>(
        &self,
        key: &K,
        bindings: &[&wgpu::Buffer],
        params: &P,
        workgroups: [u32; 3],
    ) {
        let params: &[u8] = bytemuck::bytes_of(params);
        let limit = self.device.limits().max_compute_workgroups_per_dimension;
        assert!(
            workgroups.iter().all(|&w| w <= limit),
            "kernel {} dispatch {:?} exceeds {} workgroups per dimension",
            key.spec().label,
            workgroups,
            limit
        );
        if workgroups.contains(&0) || self.dry() {
            return;
        }
        self.dispatches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kernel = self.pipeline(key);
        assert_eq!(
            bindings.len(),
            kernel.storage_bindings,
            "kernel {} declares {} storage bindings, the dispatch gave {}",
            kernel.label,
            kernel.storage_bindings,
            bindings.len()
        );
        let mut rec = self.recorder.lock().unwrap();
        if rec.dispatches.len() >= BATCH_DISPATCHES {
            self.submit(&mut rec);
        }
        if rec.params_buffer.is_none() {
            rec.params_buffer = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: PARAM_STRIDE * BATCH_DISPATCHES as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let offset = rec.params.len() as u64;
        assert!(
            params.len() <= PARAM_STRIDE as usize,
            "too many params for {}",
            kernel.label
        );
        let mut block = [0u8; PARAM_STRIDE as usize];
        block[..params.len()].copy_from_slice(params);
        rec.params.extend_from_slice(&block);
        let key = BindKey {
            kernel: Arc::as_ptr(&kernel) as usize,
            buffers: bindings.iter().map(|b| (*b).clone()).collect(),
        };
        let bind_group = match rec.bind_groups.get(&key) {
            Some(bg) if self.cache_bind_groups() => bg.clone(),
            _ => {
                let params_buffer = rec.params_buffer.as_ref().unwrap();
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: params_buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAM_STRIDE),
                    }),
                }];
                for (i, b) in bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.as_entire_binding(),
                    });
                }
                let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&kernel.label),
                    layout: &kernel.layout,
                    entries: &entries,
                });
                if rec.bind_groups.len() >= BIND_GROUP_CACHE {
                    rec.bind_groups.clear();
                }
                rec.bind_groups.insert(key, bg.clone());
                bg
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let profiled = self
            .profile
            .lock()
            .unwrap()
            .is_some()
            .then(|| kernel.clone());
        rec.dispatches.push(Dispatch {
            kernel,
            bind_group,
            offset: offset as u32,
            workgroups,
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(kernel) = profiled {
            let t0 = std::time::Instant::now();
            self.submit(&mut rec);
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
            let dt = t0.elapsed().as_secs_f64();
            let family = if self.info.profile_shapes {
                format!("{} {workgroups:?}", kernel.label)
            } else {
                kernel
                    .label
                    .split('_')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("_")
            };
            let mut prof = self.profile.lock().unwrap();
            let e = prof.as_mut().unwrap().entry(family).or_default();
            e.0 += 1;
            e.1 += dt;
        }
    }

    /// Natively: time every dispatch on its own (slow; for finding hot kernels).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_profiling(&self, on: bool) {
        *self.profile.lock().unwrap() = on.then(HashMap::new);
    }

    /// Per kernel family: (name, dispatches, seconds), slowest first.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_report(&self) -> Vec<(String, u32, f64)> {
        let mut v: Vec<_> = self
            .profile
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|(k, &(n, t))| (k.clone(), n, t))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    fn submit(&self, rec: &mut Recorder) {
        if rec.dispatches.is_empty() {
            return;
        }
        if self.record_only.load(std::sync::atomic::Ordering::Relaxed) {
            rec.dispatches.clear();
            rec.params.clear();
            return;
        }
        if let Some(params_buffer) = &rec.params_buffer {
            self.queue.write_buffer(params_buffer, 0, &rec.params);
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            for d in &rec.dispatches {
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[d.offset]);
                pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
            }
        }
        self.queue.submit([encoder.finish()]);
        rec.dispatches.clear();
        rec.params.clear();
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) {
        let mut rec = self.recorder.lock().unwrap();
        self.submit(&mut rec);
    }

    fn take_error(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap();
        match slot.take() {
            // A lost device stays lost: every later call says so.
            Some(Error::DeviceLost(m)) => {
                *slot = Some(Error::DeviceLost(m.clone()));
                Err(Error::DeviceLost(m))
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for all submitted work (natively; on the web this returns at once, and a
    /// later read waits instead).
    pub async fn sync(&self) -> Result<()> {
        self.flush();
        let (tx, rx) = oneshot::channel();
        self.queue.on_submitted_work_done(move || tx.send(()));
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        rx.await;
        self.take_error()
    }

    /// Reads a tensor back to the CPU.
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t.buffer(), (t.numel() * 4) as u64).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub(crate) async fn read_bytes(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        self.flush();
        if self.dry() {
            self.take_error()?;
            return Ok(vec![0; size as usize]);
        }
        let size = size.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        if size > 0 {
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        }
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let mapped = rx.await;
        self.take_error()?;
        mapped.map_err(|e| Error::Gpu(format!("reading a result back failed: {e}")))?;
        let out = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("mapping a result failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out[..size as usize].to_vec())
    }
}

impl Gpu {
    /// The one place host tensors become GPU weights: `host` converted to `format`
    /// (f32/f16 by `half`, int8/int4 by [`crate::quant::quantize`]) and uploaded.
    /// A packed `host` keeps its own format, whatever `format` asks: it is never
    /// dequantised.
    pub fn weight<'a>(
        &self,
        name: &str,
        host: impl Into<HostWeight<'a>>,
        shape: &[usize],
        format: WeightFormat,
    ) -> Weight {
        let host = host.into();
        assert_eq!(host.numel(), shape.iter().product::<usize>(), "{name}");
        let (format, data, scales) = host.encode(format);
        let upload = |bytes: &[u8], label: &str| {
            // Kernels bind large weights whole: only the buffer itself is limited.
            let size = self.within_limit(
                "maxBufferSize",
                self.info.max_buffer_size,
                bytes.len() as u64,
            );
            let buf = BufferPool::get_dedicated(&self.pool, &self.device, size, label);
            if size == bytes.len() as u64 && !bytes.is_empty() && !self.dry() {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4) * 4, 0);
                self.queue.write_buffer(buf.buffer(), 0, &padded);
            }
            buf
        };
        let buf = upload(&data, name);
        let scales = scales.map(|s| upload(bytemuck::cast_slice(&s), &format!("{name}.scales")));
        Weight {
            buf,
            scales,
            shape: shape.to_vec(),
            format,
        }
    }
}

/// Whether the browser's device has `subgroups` (see `Gpu::from_adapter`): set by
/// www/worker.js's `requestDevice` wrapper.
#[cfg(target_arch = "wasm32")]
fn web_subgroups() -> bool {
    web_flag("roentgenSubgroups")
}

/// A `true` global of the page or worker.
#[cfg(target_arch = "wasm32")]
fn web_flag(name: &str) -> bool {
    js_sys::Reflect::get(&js_sys::global(), &name.into())
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod path_tests {
    use super::*;

    /// Every fixed subgroup size from 4 to 128 gets, per kernel, the subgroup form
    /// that takes it or the portable form; sizes below 4 or not fixed, the portable
    /// path throughout.
    #[test]
    fn each_subgroup_size_gets_a_form_that_takes_it() {
        for software in [false, true] {
            let portable = KernelPath::for_adapter(None, software);
            assert_ne!(portable, KernelPath::Subgroup(0));
            for sg in [4u32, 8, 16, 32, 64, 128] {
                let info = GpuInfo {
                    adapter_name: String::new(),
                    backend: String::new(),
                    shader_f16: false,
                    subgroups: true,
                    subgroup_size: Some(sg),
                    software,
                    path: KernelPath::for_adapter(Some(sg), software),
                    max_storage_binding: 0,
                    max_buffer_size: 0,
                    max_workgroup_storage: 0,
                    chunked_attention: false,
                    checked_shaders: false,
                    log_pipelines: false,
                    profile_shapes: false,
                    no_broadcast: false,
                    cpu_tall_flops: CPU_TALL_FLOPS,
                };
                for max in [GEMM_MAX_SUBGROUP, ROWS_MAX_SUBGROUP, FLASH_MAX_SUBGROUP] {
                    let want = if sg <= max {
                        KernelPath::Subgroup(sg)
                    } else {
                        portable
                    };
                    assert_eq!(info.path_for(max), want, "sg {sg}, max {max}");
                }
            }
        }
    }
}
