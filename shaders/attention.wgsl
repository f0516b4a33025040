// Attention family: out = softmax(q k^T * scale [+ causal mask]) v, per batch and head,
// flash-style: keys and values stream through shared memory in tiles of BK, each
// thread keeps one query row's running max, sum and output accumulator, so the
// (heads x Nq x Nk) score tensor is never stored (512 MiB in f32 at 64x64 latents).
//
// The prelude defines: const D: u32 (head dim), const BK: u32 (keys per tile,
// BK * D <= 2048 so that two tiles fit WebGPU's default 16 KiB of workgroup memory).
//
// Bindings (heads are interleaved in the channel dim, as the projections write them):
//   0 p:   Params (uniform)
//   1 q:   [B, Nq, q_stride] f32; head h at channels h*D .. h*D+D
//   2 k:   [B, Nk, kv_stride] f32
//   3 v:   [B, Nk, kv_stride] f32
//   4 out: [B, Nq, H*D] f32
// Precision: scores, max, sum and accumulators in f32.

struct Params {
    nq: u32, nk: u32, heads: u32, q_stride: u32,
    kv_stride: u32, causal: u32, scale: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const NEG: f32 = -1.0e30;

var<workgroup> Ks: array<f32, BK * D>;
var<workgroup> Vs: array<f32, BK * D>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z;
    let h = wid.y;
    let qi = wid.x * WG + lid.x;
    let valid = qi < p.nq;
    var qr: array<f32, D>;
    var acc: array<f32, D>;
    if (valid) {
        let base = (b * p.nq + qi) * p.q_stride + h * D;
        for (var d = 0u; d < D; d++) {
            qr[d] = q[base + d] * p.scale;
            acc[d] = 0.0;
        }
    }
    var m = NEG;
    var l = 0.0;
    var s: array<f32, BK>;
    for (var k0 = 0u; k0 < p.nk; k0 += BK) {
        for (var e = lid.x; e < BK * D; e += WG) {
            let j = k0 + e / D;
            let d = e % D;
            var kv = 0.0;
            var vv = 0.0;
            if (j < p.nk) {
                let o = (b * p.nk + j) * p.kv_stride + h * D + d;
                kv = k[o];
                vv = v[o];
            }
            Ks[e] = kv;
            Vs[e] = vv;
        }
        workgroupBarrier();
        if (valid) {
            let kn = min(BK, p.nk - k0);
            var mt = m;
            for (var j = 0u; j < kn; j++) {
                var dot = 0.0;
                for (var d = 0u; d < D; d++) {
                    dot = fma(qr[d], Ks[j * D + d], dot);
                }
                if (p.causal != 0u && k0 + j > qi) {
                    dot = NEG;
                }
                s[j] = dot;
                mt = max(mt, dot);
            }
            let corr = exp(m - mt);
            l *= corr;
            for (var d = 0u; d < D; d++) {
                acc[d] *= corr;
            }
            for (var j = 0u; j < kn; j++) {
                let pj = exp(s[j] - mt);
                l += pj;
                for (var d = 0u; d < D; d++) {
                    acc[d] = fma(pj, Vs[j * D + d], acc[d]);
                }
            }
            m = mt;
        }
        workgroupBarrier();
    }
    if (valid) {
        let base = (b * p.nq + qi) * (p.heads * D) + h * D;
        let inv = 1.0 / l;
        for (var d = 0u; d < D; d++) {
            out[base + d] = acc[d] * inv;
        }
    }
}
