//! Attention (`shaders/attention_subgroup.wgsl`; elsewhere chunked GEMMs and a row
//! softmax): the subgroup flash kernel or query chunks, never the whole score tensor.

use crate::gpu::{Gpu, KernelKey, KernelPath, KernelSpec, Tensor};

use super::contract::{KernelContract, params_layout};
use super::elementwise::{ElementwiseParams, Map};
use super::gemm::{Gemm, WOperand};
use super::norm::{NormParams, RowKernel};
use super::wg1d;

const ATTENTION_SUBGROUP: &str = include_str!("../../shaders/attention_subgroup.wgsl");
const ATTENTION_MAPS: &str = include_str!("../../shaders/attention_maps.wgsl");

/// `Params` of `shaders/attention_maps.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct MapParams {
    nq: u32,
    nk: u32,
    heads: u32,
    d: u32,
    batch: u32,
    t0: u32,
    tokens: u32,
    scale: f32,
    hl: u32,
    wl: u32,
    h: u32,
    w: u32,
}

/// Per-word cross-attention maps (DAAM), accumulated on the GPU over layers and UNet
/// calls: for batch item `batch` (the conditional half's first image), the softmax
/// probabilities over keys `t0 .. t0 + tokens` (the prompt's words: BOS, EOS and
/// padding left out), summed over heads, each layer's grid resized bilinearly
/// (PyTorch `align_corners=False`) to the latent grid `h x w`, summed.
pub struct AttentionMaps {
    /// `[tokens, h, w]`.
    pub acc: Tensor,
    pub batch: usize,
    pub t0: usize,
    pub tokens: usize,
    pub h: usize,
    pub w: usize,
}

impl AttentionMaps {
    pub fn new(
        gpu: &Gpu,
        batch: usize,
        t0: usize,
        tokens: usize,
        h: usize,
        w: usize,
    ) -> crate::Result<Self> {
        Ok(AttentionMaps {
            acc: gpu.upload(&vec![0.0; tokens * h * w], &[tokens, h, w])?,
            batch,
            t0,
            tokens,
            h,
            w,
        })
    }
}

/// `Params` of `shaders/attention_subgroup.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct FlashParams {
    nq: u32,
    nk: u32,
    heads: u32,
    /// Floats between consecutive queries (keys/values) rows.
    q_stride: u32,
    kv_stride: u32,
    causal: u32,
    scale: f32,
    _pad: u32,
}

/// Head dims up to this take the subgroup flash kernel (its D loops are unrolled; the
/// VAE's single 512-wide head takes the chunked path).
const FLASH_MAX_D: usize = 160;

/// `shaders/attention_subgroup.wgsl` with its D, SG and R loops unrolled: `r` queries
/// per lane (1 on GPUs; more on CPU drivers, where each broadcast key row then feeds
/// `r` queries' FMAs).
fn flash_attention_source(d: usize, sg: usize, r: usize) -> String {
    let d4 = d / 4;
    let mut load = String::new();
    for i in 0..r {
        load += &format!(
            "    let qi{i} = i0 + {}u + lane;\n    let qb{i} = ((b * p.nq + min(qi{i}, p.nq - 1u)) * p.q_stride + h * D) / 4u;\n",
            i * sg
        );
        for c in 0..d4 {
            load += &format!("    let q{i}_{c} = q[qb{i} + {c}u] * p.scale;\n");
            load += &format!("    var a{i}_{c} = vec4<f32>(0.0);\n");
        }
        load += &format!("    var m{i} = NEG;\n    var l{i} = 0.0;\n");
    }
    let mut tile = String::new();
    for i in 0..r {
        for j in 0..sg {
            tile += &format!("        var s{i}_{j} = 0.0;\n");
        }
    }
    for c in 0..d4 {
        tile += &format!("        {{\n            let kc = k[kb + {c}u];\n");
        for j in 0..sg {
            tile += &format!("            let k{j} = subgroupBroadcast(kc, {j}u);\n");
            for i in 0..r {
                tile += &format!("            s{i}_{j} += dot(q{i}_{c}, k{j});\n");
            }
        }
        tile += "        }\n";
    }
    for i in 0..r {
        for j in 0..sg {
            tile += &format!(
                "        if (j0 + {j}u >= p.nk || (p.causal != 0u && j0 + {j}u > qi{i})) {{ s{i}_{j} = NEG; }}\n"
            );
        }
        let max = (1..sg).fold(format!("s{i}_0"), |acc, j| format!("max({acc}, s{i}_{j})"));
        tile += &format!("        let mt{i} = max(m{i}, {max});\n");
        tile += &format!("        let corr{i} = exp(m{i} - mt{i});\n");
        for j in 0..sg {
            tile += &format!("        let p{i}_{j} = exp(s{i}_{j} - mt{i});\n");
        }
        let sum = (0..sg)
            .map(|j| format!("p{i}_{j}"))
            .collect::<Vec<_>>()
            .join(" + ");
        tile += &format!("        l{i} = l{i} * corr{i} + {sum};\n        m{i} = mt{i};\n");
        for c in 0..d4 {
            tile += &format!("        a{i}_{c} *= corr{i};\n");
        }
    }
    for c in 0..d4 {
        tile += &format!("        {{\n            let vc = v[kb + {c}u];\n");
        for j in 0..sg {
            tile += &format!("            let v{j} = subgroupBroadcast(vc, {j}u);\n");
            for i in 0..r {
                tile += &format!("            a{i}_{c} += p{i}_{j} * v{j};\n");
            }
        }
        tile += "        }\n";
    }
    let mut store = String::new();
    for i in 0..r {
        store += &format!(
            "    if (qi{i} < p.nq) {{\n        let ob = ((b * p.nq + qi{i}) * (p.heads * D) + h * D) / 4u;\n        let inv = 1.0 / l{i};\n"
        );
        for c in 0..d4 {
            store += &format!("        out[ob + {c}u] = a{i}_{c} * inv;\n");
        }
        store += "    }\n";
    }
    ATTENTION_SUBGROUP
        .replace("LOAD_Q\n", &load)
        .replace("TILE\n", &tile)
        .replace("STORE\n", &store)
}

/// The flash kernel's queries per lane. GPUs: 1 (one query per lane keeps every lane
/// busy). CPU drivers (lavapipe, SwiftShader), where each lane is a SIMD lane and the
/// key loads and shuffles cost more than the FMAs: as many as keep a lane's queries
/// within 320 floats, at most 8. Measured, `roentgen bench --kernels --latent 32`,
/// attention b2 h8 1024x1024: SwiftShader d20 r1/4/8/16/32 565/263/176/167/150 ms, but
/// its shader compile time grows with the unrolled code, d40 r4/8/16 0.6/1.9/6.4 s; the
/// chunked GEMMs took 750 ms there; lavapipe d40 r1/4/8 86/49/49 ms.
fn flash_queries(d: usize, software: bool) -> usize {
    if software { (320 / d).clamp(1, 8) } else { 1 }
}

/// The flash kernel's workgroup: one subgroup where lanes hold several queries (CPU
/// drivers: more workgroups to spread over cores), else 64 invocations.
fn flash_wg(sg: u32, r: usize) -> u32 {
    if r > 1 { sg } else { 64 }
}

/// `shaders/attention_maps.wgsl`'s entry `probs` or `resize_add` (the pipeline cache's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct MapsKernel(&'static str);

impl KernelKey for MapsKernel {
    fn spec(&self) -> KernelSpec {
        KernelSpec {
            label: format!("attention_maps_{}", self.0),
            body: ATTENTION_MAPS.into(),
            prelude: String::new(),
            common: "",
            entry: self.0,
            trusted: false,
        }
    }
}

/// The flash kernel for subgroups of `sg` and head dim `d` (the pipeline cache's key):
/// `flash_attention_source(d, sg)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlashKernel {
    sg: u32,
    d: usize,
    /// Queries per lane.
    r: usize,
}

impl KernelKey for FlashKernel {
    fn spec(&self) -> KernelSpec {
        let FlashKernel { sg, d, r } = *self;
        KernelSpec {
            label: format!("attention_flash_sg{sg}_d{d}_r{r}"),
            body: flash_attention_source(d, sg as usize, r).into(),
            prelude: format!(
                "const SG: u32 = {sg}u;\nconst D: u32 = {d}u;\nconst R: u32 = {r}u;\nconst WG: u32 = {}u;\n",
                flash_wg(sg, r)
            ),
            common: "",
            entry: "main",
            trusted: false,
        }
    }
}

/// Both DAAM map kernels (q, k, sum, acc bound), the flash kernel at RoentGen's head dims
/// and subgroup sizes 4 to 64, one query per lane and CPU drivers' several (q, k, v,
/// out). The chunked path runs the GEMM, elementwise and row kernels, whose own
/// contracts cover it.
pub(super) fn contracts() -> Vec<KernelContract> {
    let maps = params_layout!(MapParams {
        nq,
        nk,
        heads,
        d,
        batch,
        t0,
        tokens,
        scale,
        hl,
        wl,
        h,
        w
    });
    let flash = params_layout!(FlashParams {
        nq,
        nk,
        heads,
        q_stride,
        kv_stride,
        causal,
        scale,
        _pad
    });
    let mut out: Vec<_> = ["probs", "resize_add"]
        .into_iter()
        .map(|e| KernelContract::new(&MapsKernel(e).spec(), maps.clone(), 4))
        .collect();
    // every subgroup size the flash kernel takes (4 to FLASH_MAX_SUBGROUP)
    for sg in [4u32, 8, 16, 32, 64] {
        for d in [40, 64, 160] {
            out.push(KernelContract::new(
                &FlashKernel { sg, d, r: 1 }.spec(),
                flash.clone(),
                4,
            ));
        }
    }
    // CPU drivers' subgroups (SwiftShader 4, lavapipe 8, 16 where llvmpipe is 512 bits
    // wide), several queries per lane
    for sg in [4u32, 8, 16] {
        for d in [20, 40, 64, 160] {
            let r = flash_queries(d, true);
            out.push(KernelContract::new(
                &FlashKernel { sg, d, r }.spec(),
                flash.clone(),
                4,
            ));
        }
    }
    out
}

impl Gpu {
    /// Adds one cross-attention layer's maps (`q [B, hl*wl, H*D]`, `k [B, Nk, H*D]`,
    /// the layer's grid `(hl, wl)`) to `maps`. Two small kernels: the probabilities of
    /// the maps' tokens summed over heads (`[tokens, hl*wl]`), then resized and added.
    pub fn attention_maps_add(
        &self,
        q: &Tensor,
        k: &Tensor,
        heads: usize,
        (hl, wl): (usize, usize),
        maps: &AttentionMaps,
    ) {
        let [_, nq, c] = q.shape().try_into().expect("attention q must be [B, N, C]");
        let [_, nk, _] = k.shape().try_into().expect("attention k must be [B, N, C]");
        assert_eq!(
            nq,
            hl * wl,
            "attention maps: {nq} queries on a {hl}x{wl} grid"
        );
        assert!(
            maps.t0 + maps.tokens <= nk,
            "attention maps: tokens past the keys"
        );
        let d = c / heads;
        let p = MapParams {
            nq: nq as u32,
            nk: nk as u32,
            heads: heads as u32,
            d: d as u32,
            batch: maps.batch as u32,
            t0: maps.t0 as u32,
            tokens: maps.tokens as u32,
            scale: 1.0 / (d as f32).sqrt(),
            hl: hl as u32,
            wl: wl as u32,
            h: maps.h as u32,
            w: maps.w as u32,
        };
        self.count_flops((4 * nq * nk * c + 12 * maps.tokens * maps.h * maps.w) as u64);
        let sum = self.empty(&[maps.tokens, nq]);
        let bindings = [q.buffer(), k.buffer(), sum.buffer(), maps.acc.buffer()];
        for (entry, n) in [("probs", nq), ("resize_add", maps.tokens * maps.h * maps.w)] {
            self.dispatch(&MapsKernel(entry), &bindings, &p, wg1d(n));
        }
    }

    /// Multi-head attention: `q [B, Nq, H*D]`, `k, v [B, Nk, H*D]` -> `[B, Nq, H*D]`,
    /// scale `1/sqrt(D)`, optionally causal (CLIP's text encoder).
    ///
    /// With fixed-size subgroups (and on CPU drivers with 4- or 8-lane ones, unless
    /// `no_broadcast`), and head dims D % 4 == 0 up to 160: the flash kernel
    /// (`shaders/attention_subgroup.wgsl`), scores kept in registers. Otherwise
    /// computed as GEMMs over query chunks: scores for a chunk of queries (all heads)
    /// in a buffer of at most 64 MiB, softmax in place, then P.V. The full score tensor
    /// (512 MiB in f32 at 64x64 latents) never exists. A first flash kernel (one thread
    /// per query, D-float accumulators) was slower on lavapipe and returned NaN there
    /// for D = 512 with more than one workgroup: per-thread arrays that large are not
    /// portable.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        causal: bool,
    ) -> Tensor {
        let [b, nq, c] = q.shape().try_into().expect("attention q must be [B, N, C]");
        let [bk, nk, ck] = k.shape().try_into().expect("attention k must be [B, N, C]");
        assert_eq!(k.shape(), v.shape(), "attention k/v");
        assert_eq!(
            (b, c),
            (bk, ck),
            "attention q {:?} k {:?}",
            q.shape(),
            k.shape()
        );
        // configs whose heads do not divide a width are refused at load
        // (`UNetConfig::from_json`, `ClipTextConfig::from_json`; the VAE has one head)
        assert_eq!(c % heads, 0, "attention: {c} channels in {heads} heads");
        let d = c / heads;
        // the chunked path's row tile: the subgroup GEMM's, or 64
        let sg = match self.info.path {
            KernelPath::Subgroup(sg) => sg as usize,
            _ => 64,
        };
        let flash = match self.info.path_for(crate::gpu::FLASH_MAX_SUBGROUP) {
            KernelPath::Subgroup(sg) => Some(sg),
            // SwiftShader's 4 lanes: the flash kernel with many queries per lane beats
            // the chunked GEMMs 4x (BENCHMARKS.md)
            KernelPath::CpuDriver => self.info.cpu_broadcast(),
            KernelPath::Tiled => None,
        };
        if let Some(sg) = flash
            && d.is_multiple_of(4)
            && d <= FLASH_MAX_D
            && c.is_multiple_of(4)
            && !self.info.chunked_attention
        {
            self.count_flops(4 * (b * heads * nq * nk * d) as u64);
            let out = self.empty(&[b, nq, c]);
            let r = flash_queries(d, self.info.software);
            let spec = FlashKernel { sg, d, r };
            let scale = 1.0 / (d as f32).sqrt();
            let p = FlashParams {
                nq: nq as u32,
                nk: nk as u32,
                heads: heads as u32,
                q_stride: c as u32,
                kv_stride: c as u32,
                causal: causal as u32,
                scale,
                _pad: 0,
            };
            let wg = flash_wg(sg, r) as usize;
            let per_wg = wg / sg as usize * sg as usize * r;
            self.dispatch(
                &spec,
                &[q.buffer(), k.buffer(), v.buffer(), out.buffer()],
                &p,
                [nq.div_ceil(per_wg) as u32, heads as u32, b as u32],
            );
            return out;
        }
        let nk4 = nk.div_ceil(4) * 4;
        self.count_flops(4 * (b * heads * nq * nk * d) as u64);
        let flops_before = self.take_flops();
        // 1. V per head, transposed to [B, H, D, Nk4] so P.V reads 4 keys at a time.
        let vt = self.empty(&[b, heads, d, nk4]);
        let spec = self.map_kernel(Map::Add, "heads_transpose");
        let pt = ElementwiseParams {
            n: vt.numel() as u32,
            keys: nk as u32,
            keys4: nk4 as u32,
            heads: heads as u32,
            head_dim: d as u32,
            ..Default::default()
        };
        self.dispatch(
            &spec,
            &[v.buffer(), self.dummy(), vt.buffer()],
            &pt,
            wg1d(vt.numel()),
        );
        // 2. query chunks: as many rows as fit the score budget, a multiple of the GEMM's
        //    row tile.
        let budget = (64usize << 20).min(self.info.max_storage_binding as usize / 2) / 4;
        let qc = (budget / (b * heads * nk4)).max(sg) / sg * sg;
        let qc = qc.min(nq.div_ceil(sg) * sg);
        let scores = self.empty(&[b * heads * qc, nk4]);
        let out = self.empty(&[b, nq, c]);
        let scale = 1.0 / (d as f32).sqrt();
        for q0 in (0..nq).step_by(qc) {
            let rows = qc.min(nq - q0);
            // S[b, h, i, j] = Q[b, q0 + i, h] . K[b, j, h]
            let s_gemm = Gemm {
                m: rows,
                n: nk,
                k: d,
                batches: b * heads,
                heads,
                a_rs: c,
                a_bs: nq * c,
                a_hs: d,
                a_off: q0 * c,
                w_rs: c,
                w_bs: nk * c,
                w_hs: d,
                o_rs: nk4,
                o_bs: heads * qc * nk4,
                o_hs: qc * nk4,
                ..Default::default()
            };
            self.gemm(
                &s_gemm,
                q.buffer(),
                WOperand::f32(k.buffer()),
                None,
                None,
                &scores,
            );
            let n_rows = b * heads * qc;
            let bindings = [self.dummy(), self.dummy(), self.dummy(), scores.buffer()];
            let ps = NormParams {
                rows: n_rows as u32,
                cols: nk as u32,
                stride: nk4 as u32,
                causal: causal as u32,
                scale,
                q_chunk: qc as u32,
                q0: q0 as u32,
                ..Default::default()
            };
            self.dispatch_rows(RowKernel::Softmax, &bindings, &ps, n_rows);
            // O[b, q0 + i, h] = P[b, h, i] . Vt[b, h]
            let o_gemm = Gemm {
                m: rows,
                n: d,
                k: nk4,
                batches: b * heads,
                heads,
                a_rs: nk4,
                a_bs: heads * qc * nk4,
                a_hs: qc * nk4,
                w_rs: nk4,
                w_bs: heads * d * nk4,
                w_hs: d * nk4,
                o_rs: c,
                o_bs: nq * c,
                o_hs: d,
                o_off: q0 * c,
                ..Default::default()
            };
            self.gemm(
                &o_gemm,
                scores.buffer(),
                WOperand::f32(vt.buffer()),
                None,
                None,
                &out,
            );
        }
        // Count the attention's own FLOPs once (not the padded GEMMs').
        self.take_flops();
        self.count_flops(flops_before);
        out
    }
}
