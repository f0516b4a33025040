//! The GEMM family (`shaders/gemm*.wgsl`): linear layers and convs as implicit GEMMs,
//! on the subgroup, CPU-driver and tiled forms, for every weight format.

use crate::gpu::{Gpu, KernelKey, KernelPath, KernelSpec, Tensor, Weight, WeightFormat};
use crate::quant::BLOCK;

use super::contract::{KernelContract, ParamsLayout, params_layout};

const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
const GEMM_SUBGROUP: &str = include_str!("../../shaders/gemm_subgroup.wgsl");
const GEMM_COMMON: &str = include_str!("../../shaders/gemm_common.wgsl");
const GEMM_CPU: &str = include_str!("../../shaders/gemm_cpu.wgsl");

/// `shaders/gemm_cpu.wgsl` with its R x C register tile unrolled (`conv`: A is a
/// conv's im2col, read through `a_inside`/`a_off` with the padding as a 0/1 factor;
/// `v4`: A and W read as vec4 along K).
/// `blocked`: the weights are quantized and every row and tap starts a block (K, the
/// conv's Cin and all weight offsets multiples of `BLOCK`): K is walked a block at a
/// time and each column's scale read once per block.
/// `lanes`: the broadcast form (`shaders/gemm_cpu.wgsl`): A's rows read 4 values per
/// lane and shared across a subgroup of that many lanes (v4, Cin a multiple of 4 x
/// lanes, WX a multiple of lanes; blocked: BLOCK a multiple of 4 x lanes).
fn gemm_cpu_source(t: CpuTile, conv: bool, v4: bool, blocked: bool, lanes: Option<u32>) -> String {
    let CpuTile { r, c, wx, wy } = t;
    let grid = |f: &dyn Fn(usize, usize) -> String| {
        (0..r)
            .flat_map(|i| (0..c).map(move |j| (i, j)))
            .map(|(i, j)| f(i, j))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rows = |f: &dyn Fn(usize) -> String| (0..r).map(f).collect::<Vec<_>>().join("\n");
    let cols = |f: &dyn Fn(usize) -> String| (0..c).map(f).collect::<Vec<_>>().join("\n");
    let valid = |i: usize| {
        if conv {
            format!(" * v{i}")
        } else {
            String::new()
        }
    };
    // vec4 along K: row i's 4 values `a{i}` (read by `a_line`) against the 4 weights of
    // each column `b{j}`.
    let fmas4 = |a_line: &dyn Fn(usize) -> String| {
        rows(&|i| {
            let mut s = a_line(i);
            for comp in ["x", "y", "z", "w"] {
                for j in 0..c {
                    s += &format!(
                        "            acc{i}_{j} = fma(a{i}.{comp}, b{j}.{comp}, acc{i}_{j});\n"
                    );
                }
            }
            s
        })
    };
    let (xbind, step, loads, fmas);
    if v4 {
        xbind = "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;";
        step = "4u";
        loads = cols(&|j| format!("            let b{j} = w4(wo{j} + wt + c);"));
        fmas = fmas4(&|i| format!("            let a{i} = x[(x{i} + c) >> 2u]{};\n", valid(i)));
    } else {
        xbind = "@group(0) @binding(1) var<storage, read> x: array<f32>;";
        step = "1u";
        loads = format!(
            "{}\n{}",
            rows(&|i| format!("            let a{i} = x[x{i} + c]{};", valid(i))),
            cols(&|j| format!("            let b{j} = w_at(wo{j} + wt + c);"))
        );
        fmas = grid(&|i, j| format!("            acc{i}_{j} = fma(a{i}, b{j}, acc{i}_{j});"));
    }
    // The broadcast form's steps over `n` lanes: lane l's 4 values of row i (`l{i}`),
    // then per lane k its values broadcast to all (`a{i}`) against 4 weights of each
    // column at c + 4k.
    let broadcast = |n: u32| {
        let mut s = rows(&|i| {
            format!(
                "            let l{i} = x[(x{i} + c + 4u * lane) >> 2u]{};",
                valid(i)
            )
        });
        s.push('\n');
        if blocked {
            // the step (4 x lanes values of K) lies in one block: its scales
            s += &cols(&|j| format!("            let s{j} = w_block(wo{j} + wt + c);"));
            s.push('\n');
        }
        for k in 0..n {
            s += "            {\n";
            s += &cols(&|j| {
                if blocked {
                    format!(
                        "            let b{j} = w4s(wo{j} + wt + c + {}u, s{j});",
                        4 * k
                    )
                } else {
                    format!("            let b{j} = w4(wo{j} + wt + c + {}u);", 4 * k)
                }
            });
            s.push('\n');
            s += &fmas4(&|i| format!("            let a{i} = subgroupBroadcast(l{i}, {k}u);\n"));
            s += "            }\n";
        }
        s
    };
    let inner = if let Some(n) = lanes {
        assert!(v4, "the broadcast form reads weights as vec4");
        assert!(
            !blocked || BLOCK.is_multiple_of(4 * n as usize),
            "a broadcast step lies in one block"
        );
        format!(
            "        for (var c = 0u; c < p.in_c; c += {}u) {{\n{}        }}",
            4 * n,
            broadcast(n),
        )
    } else if blocked {
        format!(
            "        for (var cb = 0u; cb < p.in_c; cb += {BLOCK}u) {{\n{}\n        for (var c = cb; c < cb + {BLOCK}u; c += 4u) {{\n{}\n{fmas}\n        }}\n        }}",
            cols(&|j| format!("            let s{j} = w_block(wo{j} + wt + cb);")),
            cols(&|j| format!("            let b{j} = w4s(wo{j} + wt + c, s{j});")),
        )
    } else {
        format!("        for (var c = 0u; c < p.in_c; c += {step}) {{\n{loads}\n{fmas}\n        }}")
    };
    let parts = [
        ("XBIND", xbind.to_string()),
        (
            "ROWS",
            rows(&|i| {
                format!(
                    "    let r{i} = a_row(min(m_first + {}u, p.M - 1u), z);",
                    wy * i
                )
            }),
        ),
        (
            "COLS",
            cols(&|j| {
                format!(
                    "    let wo{j} = w_base + min(n_first + {}u, p.N - 1u) * p.w_rs;",
                    wx * j
                )
            }),
        ),
        ("ACC", grid(&|i, j| format!("    var acc{i}_{j} = 0.0;"))),
        (
            "PIX",
            rows(&|i| {
                if conv {
                    format!(
                        "        let in{i} = a_inside(r{i}, kx, ky);\n        let x{i} = select(0u, a_off(r{i}, kx, ky), in{i});\n        let v{i} = select(0.0, 1.0, in{i});"
                    )
                } else {
                    format!("        let x{i} = r{i}.base;")
                }
            }),
        ),
        ("INNER", inner),
        (
            "STORE",
            grid(&|i, j| {
                format!(
                    "    store_out(m_first + {}u, n_first + {}u, o_base, acc{i}_{j});",
                    wy * i,
                    wx * j
                )
            }),
        ),
    ];
    let mut src = GEMM_CPU
        .replace(
            "\nLANE_FIELD\n",
            if lanes.is_some() {
                "\n    @builtin(subgroup_invocation_id) lane: u32,\n"
            } else {
                "\n"
            },
        )
        .replace(
            "\nLANE\n",
            if lanes.is_some() {
                "\n    let lane = ids.lane;\n"
            } else {
                "\n"
            },
        )
        .replace(
            "\nEXIT\n",
            if lanes.is_some() {
                "\n    // no early exit: every lane takes part in the broadcasts\n"
            } else {
                "\n    if ((m_first >= p.M) | (n_first >= p.N)) {\n        return; // no barrier follows: leaving early is safe\n    }\n"
            },
        );
    for (k, v) in parts {
        src = src.replace(&format!("\n{k}\n"), &format!("\n{v}\n"));
    }
    src
}

/// Geometry of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub stride: usize,
    /// Zero padding above and to the left; below and to the right follows from the
    /// output size (diffusers' VAE encoder pads only bottom/right before its stride-2 convs).
    pub pad: usize,
    /// Extra zero padding below/right beyond `pad` (asymmetric padding).
    pub pad_extra: usize,
    /// Read the input through a nearest-neighbour 2x upsample.
    pub upsample: bool,
}

impl ConvGeom {
    pub fn same(k: usize) -> ConvGeom {
        ConvGeom {
            stride: 1,
            pad: k / 2,
            pad_extra: 0,
            upsample: false,
        }
    }
}

/// Row tiles of SG rows per subgroup in the subgroup GEMM: each weight load feeds
/// RT * SG * 4 FMAs.
/// (Measured on lavapipe at the half-width UNet's shapes: 1 -> 2 -> 4 row tiles gave
/// 5.6 -> 5.1 s per guided call.)
const RT: usize = 4;
/// Subgroups per workgroup, side by side along N. Smaller workgroups (8-32
/// invocations) left whole column blocks unwritten on lavapipe — caught by the poisoned
/// kernel tests, while the benchmark showed them "faster": 8 it is.
const SUBGROUPS: usize = 8;

/// The CPU GEMM's tile: R x C outputs per thread, WX x WY threads per workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CpuTile {
    r: usize,
    c: usize,
    wx: usize,
    wy: usize,
}

impl CpuTile {
    /// 8 rows per thread (8 x 8 = 64 accumulators: measured fastest in SwiftShader,
    /// where each value a thread loads is a gather; the broadcast form's tall GEMMs take
    /// 16, see `gemm_kernel`), and the columns per thread and threads per row that waste
    /// the fewest columns past N: attention's P.V has N = the head dim (20, 40 ...), the
    /// UNet's widths are multiples of 160.
    fn for_n(n: usize) -> CpuTile {
        let (c, wx) = [8, 7, 6, 5, 4]
            .into_iter()
            .flat_map(|c| [16, 8, 4].into_iter().map(move |wx| (c, wx)))
            .min_by_key(|&(c, wx)| (n.div_ceil(c * wx) * c * wx, std::cmp::Reverse(c * wx)))
            .unwrap();
        // 128 invocations per workgroup: 64 and 256 were slower in SwiftShader.
        CpuTile {
            r: 8,
            c,
            wx,
            wy: 128 / wx,
        }
    }
}

/// Geometry of a conv seen as an implicit GEMM.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvParams {
    in_h: usize,
    in_w: usize,
    in_c: usize,
    kw: usize,
    out_h: usize,
    out_w: usize,
    stride: usize,
    pad: usize,
    /// The input as the conv reads it: through a nearest upsample to (lh, lw), or
    /// (in_h, in_w) for none.
    lh: usize,
    lw: usize,
}

/// One GEMM: `batches` independent `[m, k] x [n, k]^T` products with strided operands
/// (element offsets; `batches = b * heads`, batch index split as (b, h)). Mirrors the
/// Params block of `shaders/gemm_subgroup.wgsl`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Gemm {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) batches: usize,
    pub(super) heads: usize,
    pub(super) conv: Option<ConvParams>,
    pub(super) a_rs: usize,
    pub(super) w_rs: usize,
    pub(super) o_rs: usize,
    pub(super) a_bs: usize,
    pub(super) a_hs: usize,
    pub(super) w_bs: usize,
    pub(super) w_hs: usize,
    pub(super) o_bs: usize,
    pub(super) o_hs: usize,
    pub(super) a_off: usize,
    pub(super) o_off: usize,
    /// Channel slices: first weight element, distance between taps, first bias.
    pub(super) w_off: usize,
    pub(super) w_tap: usize,
    pub(super) b_off: usize,
}

impl Gemm {
    /// Row-major `[m, k] x [n, k]^T -> [m, n]`.
    fn dense(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batches: 1,
            heads: 1,
            a_rs: k,
            w_rs: k,
            o_rs: n,
            w_tap: k,
            ..Default::default()
        }
    }

    fn strides_aligned(&self) -> bool {
        [
            self.a_rs, self.w_rs, self.a_bs, self.a_hs, self.w_bs, self.w_hs, self.a_off,
            self.w_off, self.w_tap,
        ]
        .iter()
        .all(|s| s % 4 == 0)
    }

    fn params(&self) -> GemmParams {
        let c = self.conv.unwrap_or(ConvParams {
            in_h: 0,
            in_w: 0,
            in_c: self.k,
            kw: 1,
            out_h: 0,
            out_w: 0,
            stride: 1,
            pad: 0,
            lh: 0,
            lw: 0,
        });
        // torch's nearest scale: float(in) / out, rounded once
        let scale = |i: usize, o: usize| if o == 0 { 0.0 } else { i as f32 / o as f32 };
        let u = |v: usize| v as u32;
        GemmParams {
            m: u(self.m),
            n: u(self.n),
            k: u(self.k),
            heads: u(self.heads),
            in_h: u(c.in_h),
            in_w: u(c.in_w),
            in_c: u(c.in_c),
            kw: u(c.kw),
            out_h: u(c.out_h),
            out_w: u(c.out_w),
            stride: u(c.stride),
            pad_y: u(c.pad),
            pad_x: u(c.pad),
            lh: u(c.lh),
            a_rs: u(self.a_rs),
            w_rs: u(self.w_rs),
            o_rs: u(self.o_rs),
            a_bs: u(self.a_bs),
            a_hs: u(self.a_hs),
            w_bs: u(self.w_bs),
            w_hs: u(self.w_hs),
            o_bs: u(self.o_bs),
            o_hs: u(self.o_hs),
            a_off: u(self.a_off),
            o_off: u(self.o_off),
            w_off: u(self.w_off),
            w_tap: u(if self.w_tap == 0 { c.in_c } else { self.w_tap }),
            b_off: u(self.b_off),
            lw: u(c.lw),
            scale_h: scale(c.in_h, c.lh),
            scale_w: scale(c.in_w, c.lw),
            _pad: 0,
        }
    }
}

/// A GEMM kernel as a dispatch names it (the pipeline cache's key): its form, the
/// weights' format and the epilogue. Its WGSL is built only when it is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GemmKernel {
    form: GemmForm,
    /// A conv's implicit GEMM (A read through the conv's geometry), else a linear one.
    conv: bool,
    format: WeightFormat,
    bias: bool,
    res: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GemmForm {
    /// `shaders/gemm_subgroup.wgsl` for subgroups of this size.
    Subgroup(u32),
    /// `shaders/gemm_cpu.wgsl` unrolled for this tile (see [`gemm_cpu_source`]).
    Cpu {
        tile: CpuTile,
        v4: bool,
        blocked: bool,
        upsample: bool,
        /// the broadcast form over subgroups of this many lanes
        lanes: Option<u32>,
    },
    /// `shaders/gemm.wgsl`, 64 x 64 workgroup tiles.
    Tiled,
}

impl KernelKey for GemmKernel {
    fn spec(&self) -> KernelSpec {
        let GemmKernel {
            form,
            conv,
            format: wf,
            bias,
            res,
        } = *self;
        let mode = if conv { "conv" } else { "linear" };
        let flags = format!("w{}_b{}_r{}", wf.name(), bias as u8, res as u8);
        let consts = format!("const HAS_BIAS: bool = {bias};\nconst HAS_RES: bool = {res};\n");
        match form {
            GemmForm::Subgroup(sg) => KernelSpec {
                label: format!("gemm_sg{sg}_{RT}x{SUBGROUPS}_{mode}_{flags}"),
                body: GEMM_SUBGROUP.into(),
                prelude: format!(
                    "const SG: u32 = {sg}u;\nconst RT: u32 = {RT}u;\nconst SUBGROUPS: u32 = {SUBGROUPS}u;\n{consts}{}fn a_base(m: u32, t: u32, z: u32) -> i32 {{ return a_base_{mode}(m, t, z); }}\n",
                    wf.wgsl_vec4(2, 6)
                ),
                common: GEMM_COMMON,
                entry: "main",
                trusted: true,
            },
            GemmForm::Cpu {
                tile,
                v4,
                blocked,
                upsample,
                lanes,
            } => {
                let CpuTile { r, c, wx, wy } = tile;
                KernelSpec {
                    label: format!(
                        "gemm_cpu_{mode}{}_{flags}_{r}x{c}_{wx}x{wy}{}{}{}",
                        if upsample { "_up" } else { "" },
                        if v4 { "_v4" } else { "" },
                        if blocked { "_blocked" } else { "" },
                        lanes.map_or(String::new(), |n| format!("_bc{n}"))
                    ),
                    body: gemm_cpu_source(tile, conv, v4, blocked, lanes).into(),
                    prelude: format!(
                        "{consts}{}const CONV: bool = {conv};\nconst V4: bool = {v4};\nconst BLOCKED: bool = {blocked};\nconst UPSAMPLE: bool = {upsample};\nconst R: u32 = {r}u;\nconst C: u32 = {c}u;\nconst WX: u32 = {wx}u;\nconst WY: u32 = {wy}u;\n",
                        match (blocked, v4) {
                            (true, _) => wf.wgsl_blocked(2, 6).unwrap_or_default(),
                            (false, true) => wf.wgsl_vec4(2, 6),
                            (false, false) => wf.wgsl(2, 6),
                        },
                    ),
                    common: GEMM_COMMON,
                    entry: "main",
                    trusted: false,
                }
            }
            GemmForm::Tiled => KernelSpec {
                label: format!("gemm_tiled_{mode}_{flags}_64x64"),
                body: GEMM.into(),
                prelude: format!("{consts}{}const CONV: bool = {conv};\n", wf.wgsl(2, 6)),
                common: GEMM_COMMON,
                entry: "main",
                trusted: false,
            },
        }
    }
}

/// The CPU form's broadcast variant where the adapter has it: its lanes, and whether
/// the GEMM is tall (at least [`crate::gpu::GpuInfo::cpu_tall_flops`]).
#[derive(Clone, Copy, Debug)]
struct CpuBroadcast {
    lanes: u32,
    tall: bool,
}

/// The kernel a GEMM `g` takes on `path` (resolved: the subgroup form only where the
/// shapes allow its 4-wide reads) with its weights in `wf` and the epilogue's bias and
/// residual, and its workgroup grid. `broadcast`: the CPU form's broadcast variant
/// where the adapter has it ([`crate::gpu::GpuInfo::cpu_broadcast`]), taken where the
/// shape allows; when tall it takes 16 rows per thread and every weight format.
fn gemm_kernel(
    path: KernelPath,
    g: &Gemm,
    p: &GemmParams,
    wf: WeightFormat,
    bias: bool,
    res: bool,
    broadcast: Option<CpuBroadcast>,
) -> (GemmKernel, [u32; 3]) {
    let conv = g.conv.is_some();
    let (form, tile_n, tile_m) = match path {
        KernelPath::Subgroup(sg) => (
            GemmForm::Subgroup(sg),
            SUBGROUPS * sg as usize,
            RT * sg as usize,
        ),
        // CPU drivers: the register-tiled form without barriers (shaders/gemm_cpu.wgsl).
        KernelPath::CpuDriver => {
            let tile = CpuTile::for_n(g.n);
            let in_c = p.in_c as usize;
            let v4 = g.k.is_multiple_of(4) && in_c.is_multiple_of(4) && g.strides_aligned();
            let blocked = v4
                && wf.quant().is_some()
                && [p.in_c, p.w_rs, p.w_off, p.w_tap, p.w_bs, p.w_hs]
                    .iter()
                    .all(|&v| (v as usize).is_multiple_of(BLOCK));
            // Tall GEMMs: every format (blocked ones when a step of 4 x lanes values of
            // K lies in one block). With 8 rows per thread the broadcasts lost on
            // quantized weights (decoding is ALU work the shuffles compete with: int8
            // 10-20 % slower); with 16 every format gains (SwiftShader, conv3x3
            // 2x32x32x160: int8 321 -> 178 ms, int4 284 -> 184, f16 254 -> 198, f32
            // 215 -> 186; BENCHMARKS.md). Smaller ones: f32 only, 8 rows.
            let tall = broadcast.is_some_and(|b| b.tall);
            let lanes = broadcast.map(|b| b.lanes).filter(|&n| {
                let step = 4 * n as usize;
                v4 && in_c.is_multiple_of(step)
                    && tile.wx.is_multiple_of(n as usize)
                    && (!blocked || BLOCK.is_multiple_of(step))
                    && (tall || wf == WeightFormat::F32)
            });
            // The broadcast form takes 16 rows per thread: each weight a thread gathers
            // then feeds twice the FMAs. SwiftShader, alternated (BENCHMARKS.md): linear
            // 2048x160 -> 1280 205 -> 167 ms, conv3x3 2x32x32x160 215 -> 186 ms; 24 and
            // 32 rows gain a little more on large M but lose on the 8x8 level's convs,
            // and their shaders take 2-3 s each to compile (16: 0.6-1.2 s, 8: 0.3-0.5 s).
            // Without broadcasts 16 rows did not pay (int8: within noise).
            let tile = match lanes {
                Some(_) if tall => CpuTile { r: 16, ..tile },
                _ => tile,
            };
            let form = GemmForm::Cpu {
                tile,
                v4,
                blocked,
                upsample: g.conv.is_some_and(|c| (c.lh, c.lw) != (c.in_h, c.in_w)),
                lanes,
            };
            (form, tile.wx * tile.c, tile.wy * tile.r)
        }
        KernelPath::Tiled => (GemmForm::Tiled, 64, 64),
    };
    let key = GemmKernel {
        form,
        conv,
        format: wf,
        bias,
        res,
    };
    let grid = [
        g.n.div_ceil(tile_n) as u32,
        g.m.div_ceil(tile_m) as u32,
        g.batches as u32,
    ];
    (key, grid)
}

fn params_contract() -> ParamsLayout {
    params_layout!(GemmParams {
        m as "M", n as "N", k as "K", heads, in_h, in_w, in_c, kw, out_h, out_w, stride,
        pad_y, pad_x, lh, a_rs, w_rs, o_rs, a_bs, a_hs, w_bs, w_hs, o_bs, o_hs, a_off,
        o_off, w_off, w_tap, b_off, lw, scale_h, scale_w, _pad,
    })
}

/// One slice of a `k x k`, stride-1 conv of `cin` -> `cout` channels on an `h x w` map
/// (read through a 2x nearest upsample where `up`), set up as `conv2d_impl` does.
fn conv_gemm(cin: usize, cout: usize, k: usize, (h, w): (usize, usize), up: bool) -> Gemm {
    let (lh, lw) = if up { (2 * h, 2 * w) } else { (h, w) };
    let pad = k / 2;
    let (oh, ow) = (lh + 2 * pad + 1 - k, lw + 2 * pad + 1 - k);
    let mut g = Gemm::dense(oh * ow, cout, k * k * cin);
    g.conv = Some(ConvParams {
        in_h: h,
        in_w: w,
        in_c: cin,
        kw: k,
        out_h: oh,
        out_w: ow,
        stride: 1,
        pad,
        lh,
        lw,
    });
    g.w_rs = k * k * cin;
    g.w_tap = cin;
    g
}

/// The GEMM in every form (subgroups of 16 and 32 where the shape takes them, CPU
/// driver, tiled) for linear layers and convs (aligned and not, block-aligned for the
/// CPU form's quantized walk, upsampled), every weight format, with and without bias
/// and residual. Each dispatch binds x, w, bias, res, out and a quantized weight's
/// scales. Specialisations that come out as the same text are kept once.
pub(super) fn contracts() -> Vec<KernelContract> {
    let shapes = [
        Gemm::dense(64, 320, 320),
        Gemm::dense(77, 20, 36),
        Gemm::dense(7, 13, 13),
        conv_gemm(320, 320, 3, (8, 8), false),
        conv_gemm(320, 320, 3, (8, 8), true),
        conv_gemm(3, 128, 3, (16, 16), false),
    ];
    let formats = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Int8,
        WeightFormat::Int4,
    ];
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for g in &shapes {
        let in_c = g.conv.map_or(g.k, |c| c.in_c);
        let aligned = g.k.is_multiple_of(4) && in_c.is_multiple_of(4) && g.strides_aligned();
        let mut paths = vec![KernelPath::CpuDriver, KernelPath::Tiled];
        if aligned {
            // every subgroup size the subgroup GEMM takes (4 to GEMM_MAX_SUBGROUP)
            paths.extend([4, 8, 16, 32].map(KernelPath::Subgroup));
        }
        for path in paths {
            for wf in formats {
                for (bias, res) in [(false, false), (true, false), (false, true), (true, true)] {
                    // the CPU form also in its broadcast variant over 4 and 8 lanes, small
                    // and tall
                    let broadcasts: &[Option<u32>] = match path {
                        KernelPath::CpuDriver => &[None, Some(4), Some(8)],
                        _ => &[None],
                    };
                    for broadcast in broadcasts.iter().flat_map(|l| {
                        [false, true].map(|tall| l.map(|lanes| CpuBroadcast { lanes, tall }))
                    }) {
                        let (key, _) = gemm_kernel(path, g, &g.params(), wf, bias, res, broadcast);
                        let buffers = 5 + wf.quant().is_some() as usize;
                        let c = KernelContract::new(&key.spec(), params_contract(), buffers);
                        if seen.insert((c.source.clone(), c.entry.clone())) {
                            out.push(c);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The GEMM family's uniform block: field for field the `Params` struct of
/// `shaders/gemm_common.wgsl` (u32 and f32 only, so `repr(C)` matches WGSL's layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    kw: u32,
    out_h: u32,
    out_w: u32,
    stride: u32,
    pad_y: u32,
    pad_x: u32,
    lh: u32,
    a_rs: u32,
    w_rs: u32,
    o_rs: u32,
    a_bs: u32,
    a_hs: u32,
    w_bs: u32,
    w_hs: u32,
    o_bs: u32,
    o_hs: u32,
    a_off: u32,
    o_off: u32,
    w_off: u32,
    w_tap: u32,
    b_off: u32,
    /// The conv's input seen through a nearest upsample to `lh x lw`.
    lw: u32,
    scale_h: f32,
    scale_w: f32,
    _pad: u32,
}

/// The GEMM's second operand: a weight in its storage format (with its scales when
/// quantized) or an f32 activation (attention's K and V).
#[derive(Clone, Copy)]
pub(super) struct WOperand<'a> {
    buf: &'a wgpu::Buffer,
    scales: Option<&'a wgpu::Buffer>,
    format: WeightFormat,
}

impl<'a> WOperand<'a> {
    fn of(w: &'a Weight) -> Self {
        WOperand {
            buf: w.buffer(),
            scales: w.scales(),
            format: w.format,
        }
    }
    pub(super) fn f32(buf: &'a wgpu::Buffer) -> Self {
        WOperand {
            buf,
            scales: None,
            format: WeightFormat::F32,
        }
    }
}

/// [`Gpu::channel_slices`] for a binding of `limit` bytes: None when no split fits.
pub fn channel_slices(bytes: usize, channels: usize, limit: usize) -> Option<usize> {
    [1, 2, 4, 8, 16, 32].into_iter().find(|&n| {
        channels.is_multiple_of(n)
            && (n == 1 || (channels / n).is_multiple_of(4))
            && bytes.div_ceil(n) <= limit
    })
}

impl Gpu {
    /// Dispatches the GEMM family (see `shaders/gemm*.wgsl`): the subgroup kernel where
    /// the adapter has fixed-size subgroups and the shapes allow 4-wide reads, else the
    /// portable tiled kernel. Operands are buffers (a weight or an activation) so that
    /// attention's products run on the same kernels.
    #[allow(clippy::too_many_arguments)] // the GEMM's operands, each optional or typed
    pub(super) fn gemm(
        &self,
        g: &Gemm,
        x: &wgpu::Buffer,
        w: WOperand,
        bias: Option<&Weight>,
        res: Option<&Tensor>,
        out: &Tensor,
    ) {
        self.count_flops(2 * (g.m * g.n * g.k * g.batches) as u64);
        let in_c = g.conv.map_or(g.k, |c| c.in_c);
        let p = g.params();
        let aligned = g.k.is_multiple_of(4) && in_c.is_multiple_of(4) && g.strides_aligned();
        let path = match self.info.path_for(crate::gpu::GEMM_MAX_SUBGROUP) {
            // 4-wide reads along K: K and a conv's Cin % 4 == 0, rows 4-aligned.
            KernelPath::Subgroup(_) if !aligned => self.info.fallback(),
            p => p,
        };
        let (kernel, workgroups) = gemm_kernel(
            path,
            g,
            &p,
            w.format,
            bias.is_some(),
            res.is_some(),
            self.info.cpu_broadcast().map(|lanes| CpuBroadcast {
                lanes,
                tall: 2 * (g.m * g.n * g.k * g.batches) as u64 >= self.info.cpu_tall_flops,
            }),
        );
        let dummy = self.dummy();
        let mut bindings = vec![
            x,
            w.buf,
            bias.map(|b| b.buffer()).unwrap_or(dummy),
            res.map(|r| r.buffer()).unwrap_or(dummy),
            out.buffer(),
        ];
        // binding 6: a quantized weight's scales
        bindings.extend(w.scales);
        self.dispatch(&kernel, &bindings, &p, workgroups);
    }

    /// `x [.., K] · wᵀ (+ bias) (+ res)` with `w [N, K]` as PyTorch stores `nn.Linear`.
    pub fn linear(
        &self,
        x: &Tensor,
        w: &Weight,
        bias: Option<&Weight>,
        res: Option<&Tensor>,
    ) -> Tensor {
        let k = x.dim(-1);
        let (n, wk) = (w.shape[0], w.shape[1]);
        assert_eq!(
            k,
            wk,
            "linear: input {:?} against weight {:?}",
            x.shape(),
            w.shape
        );
        let m = x.numel() / k;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().unwrap() = n;
        if let Some(r) = res {
            assert_eq!(r.shape(), &out_shape[..], "linear residual");
        }
        let out = self.empty(&out_shape);
        self.gemm(
            &Gemm::dense(m, n, k),
            x.buffer(),
            WOperand::of(w),
            bias,
            res,
            &out,
        );
        out
    }

    /// 2-D convolution of an NHWC map with `w [Cout, KH, KW, Cin]`.
    pub fn conv2d(
        &self,
        x: &Tensor,
        w: &Weight,
        bias: Option<&Weight>,
        g: ConvGeom,
        res: Option<&Tensor>,
    ) -> Tensor {
        let out = self.conv2d_sliced(
            std::slice::from_ref(x),
            w,
            bias,
            g,
            res.map(std::slice::from_ref),
        );
        // a caller's contract; a generation's sizes are checked against the bindings
        // first (`models::fit::check`), so no request reaches it
        assert_eq!(
            out.len(),
            1,
            "conv2d output does not fit one binding; use conv2d_sliced"
        );
        out.into_iter().next().unwrap()
    }

    /// How many equal channel slices a `[.., channels]` map of `bytes` needs so that each
    /// fits one storage binding: a divisor of `channels` and of 32 (so GroupNorm groups
    /// never straddle two slices), each slice a multiple of 4 channels.
    ///
    /// A generation's maps are checked against the bindings before it runs
    /// ([`crate::models::fit`]), so no user's size or count reaches the panic.
    pub fn channel_slices(&self, bytes: usize, channels: usize) -> usize {
        let limit = self.info.max_storage_binding as usize;
        channel_slices(bytes, channels, limit).unwrap_or_else(|| {
            panic!("a map of {bytes} bytes cannot be split to fit a {limit}-byte binding")
        })
    }

    /// 2-D convolution of an NHWC map held as channel slices (`xs`, concatenated along
    /// channels), producing the output as channel slices that each fit one binding: how
    /// RoentGen's VAE decodes 512x512 (a 256-channel 512x512 map is 256 MiB, twice
    /// WebGPU's default 128 MiB binding) exactly. Each output slice accumulates one GEMM
    /// per input slice through the residual epilogue. A 1x1 conv may pass a `[N, K]`
    /// linear weight.
    pub fn conv2d_sliced(
        &self,
        xs: &[Tensor],
        w: &Weight,
        bias: Option<&Weight>,
        g: ConvGeom,
        res: Option<&[Tensor]>,
    ) -> Vec<Tensor> {
        self.conv2d_impl(xs, w, bias, g, res, None)
    }

    /// A conv that reads its input through a nearest upsample to `size` (H, W): the
    /// UNet's Upsample2D when the latent size is not a multiple of 8 and a level must grow
    /// to its skip connection's size rather than double (diffusers' `upsample_size`).
    pub fn conv2d_upsampled_to(
        &self,
        x: &Tensor,
        w: &Weight,
        bias: Option<&Weight>,
        g: ConvGeom,
        size: (usize, usize),
    ) -> Tensor {
        let mut out = self.conv2d_impl(std::slice::from_ref(x), w, bias, g, None, Some(size));
        // UNet maps fit one binding (`models::fit::check`)
        assert_eq!(
            out.len(),
            1,
            "an upsampled UNet map does not fit one binding"
        );
        out.pop().unwrap()
    }

    fn conv2d_impl(
        &self,
        xs: &[Tensor],
        w: &Weight,
        bias: Option<&Weight>,
        g: ConvGeom,
        res: Option<&[Tensor]>,
        upsample_to: Option<(usize, usize)>,
    ) -> Vec<Tensor> {
        let (cout, kh, kw, cin) = match w.shape[..] {
            [o, kh, kw, i] => (o, kh, kw, i),
            [o, i] => (o, 1, 1, i),
            _ => panic!(
                "conv2d weight must be [Cout, KH, KW, Cin], got {:?}",
                w.shape
            ),
        };
        let [b, h, wd, _] = xs[0]
            .shape()
            .try_into()
            .expect("conv2d input must be [B, H, W, C]");
        let c: usize = xs.iter().map(|x| x.dim(-1)).sum();
        assert_eq!(
            c, cin,
            "conv2d: input of {c} channels against weight {:?}",
            w.shape
        );
        let (lh, lw) = match upsample_to {
            Some(size) => size,
            None if g.upsample => (2 * h, 2 * wd),
            None => (h, wd),
        };
        let oh = (lh + 2 * g.pad + g.pad_extra - kh) / g.stride + 1;
        let ow = (lw + 2 * g.pad + g.pad_extra - kw) / g.stride + 1;
        let k_total = kh * kw * cin;
        let n_slices = self.channel_slices(b * oh * ow * cout * 4, cout);
        let cs = cout / n_slices;
        if let Some(r) = res {
            assert_eq!(r.len(), n_slices, "conv2d residual slices");
        }
        let mut outs = Vec::with_capacity(n_slices);
        for j in 0..n_slices {
            let n0 = j * cs;
            let mut acc: Option<Tensor> = res.map(|r| r[j].clone());
            let mut c0 = 0;
            for (i, x) in xs.iter().enumerate() {
                let ci = x.dim(-1);
                let out = self.empty(&[b, oh, ow, cs]);
                let mut gm = Gemm::dense(b * oh * ow, cs, kh * kw * ci);
                gm.conv = Some(ConvParams {
                    in_h: h,
                    in_w: wd,
                    in_c: ci,
                    kw,
                    out_h: oh,
                    out_w: ow,
                    stride: g.stride,
                    pad: g.pad,
                    lh,
                    lw,
                });
                gm.w_rs = k_total;
                gm.w_off = n0 * k_total + c0;
                gm.w_tap = cin;
                gm.b_off = n0;
                let bias = if i == 0 { bias } else { None };
                self.gemm(&gm, x.buffer(), WOperand::of(w), bias, acc.as_ref(), &out);
                acc = Some(out);
                c0 += ci;
            }
            outs.push(acc.unwrap());
        }
        outs
    }
}
