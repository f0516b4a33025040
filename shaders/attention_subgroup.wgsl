// Attention family, subgroup variant (flash-style): out = softmax(q k^T * scale) v per
// batch and head, for adapters with fixed-size subgroups (SG lanes) and head dims D
// with D % 4 == 0 and D <= 160. Scores never leave registers.
//
// Each subgroup owns SG queries (lane l: query i0 + l, its running max, sum and D output
// accumulators). Per tile of SG keys, lane l loads key row j0 + l and value row j0 + l
// (D / 4 vec4 each); subgroupShuffle hands every lane the other lanes' rows, so each
// loaded value feeds SG lanes' FMAs, as in gemm_subgroup.wgsl. Loops over D are unrolled
// by the generator in src/ops.rs (the parts in capitals below): named vec4 accumulators,
// never an indexed private array (which CPU drivers keep in gathered scratch memory).
// Statistics (max, sum) and accumulators in f32.
//
// Bindings (heads interleaved in the channel dim, as the projections write them):
//   0 p:   Params (uniform)
//   1 q:   [B, Nq, q_stride] f32 (as vec4s); head h at channels h*D .. h*D+D
//   2 k:   [B, Nk, kv_stride] f32
//   3 v:   [B, Nk, kv_stride] f32
//   4 out: [B, Nq, H*D] f32

struct Params {
    nq: u32, nk: u32, heads: u32, q_stride: u32,
    kv_stride: u32, causal: u32, scale: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

const NEG: f32 = -1.0e30;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(local_invocation_index) lidx: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let i0 = (wid.x * (64u / SG) + lidx / SG) * SG;
    if (i0 >= p.nq) {
        return; // the whole subgroup
    }
    let b = wid.z;
    let h = wid.y;
    let qi = i0 + lane;
    let qb = ((b * p.nq + min(qi, p.nq - 1u)) * p.q_stride + h * D) / 4u;
LOAD_Q
DECLARE_ACC
    var m = NEG;
    var l = 0.0;
    // causal: no query of this block sees keys past its last query
    var kend = p.nk;
    if (p.causal != 0u) {
        kend = min(p.nk, i0 + SG);
    }
    for (var j0 = 0u; j0 < kend; j0 += SG) {
        let kb = ((b * p.nk + min(j0 + lane, p.nk - 1u)) * p.kv_stride + h * D) / 4u;
        // 1. scores of this lane's query against keys j0 .. j0 + SG
DECLARE_S
SCORES
        // keys past the end, and (causal) after the query, do not count
MASK
        // 2. online softmax: rescale what was summed so far to the new max
        let mt = max(m, MAX_S);
        let corr = exp(m - mt);
EXP_S
        l = l * corr + SUM_P;
RESCALE_ACC
        // 3. accumulate P.V
PV
        m = mt;
    }
    if (qi < p.nq) {
        let ob = ((b * p.nq + qi) * (p.heads * D) + h * D) / 4u;
        let inv = 1.0 / l;
STORE
    }
}
