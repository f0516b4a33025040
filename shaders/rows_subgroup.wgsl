// Row reductions with one subgroup per row: LayerNorm and the softmax of chunked
// attention, for adapters with fixed-size subgroups (prelude: const SG: u32).
// Subgroup reductions need no workgroup barriers, which on CPU drivers (lavapipe)
// cost a switch between every group of lanes; the portable versions are in norm.wgsl.
// Statistics in f32: two-pass mean/variance; online max/sum for the softmax.
//
// Bindings:
//   0 p:     Params (uniform)
//   1 x:     [rows, cols] f32 (LayerNorm input; not read by the softmax)
//   2 gamma: [cols] f32 (not read by the softmax)
//   3 beta:  [cols] f32 (not read by the softmax)
//   4 out:   LayerNorm output [rows, cols]; the softmax's scores [rows, stride], in place

// The same Params as norm.wgsl's (one Rust mirror, `ops::norm::NormParams`).
struct Params {
    eps: f32, pixels: u32, channels: u32, groups: u32,
    c_off: u32, rows: u32, cols: u32, stride: u32,
    causal: u32, scale: f32, q_chunk: u32, q0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

fn row_index(lidx: u32, wid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * 65535u) * (WG / SG) + lidx / SG;
}

@compute @workgroup_size(64, 1, 1)
fn layer_norm(@builtin(local_invocation_index) lidx: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = row_index(lidx, wid);
    if (row >= p.rows) {
        return; // uniform across the subgroup
    }
    let c = p.cols;
    let base = row * c;
    var s = 0.0;
    for (var i = lane; i < c; i += SG) {
        s += x[base + i];
    }
    let mean = subgroupAdd(s) / f32(c);
    var s2 = 0.0;
    for (var i = lane; i < c; i += SG) {
        let d = x[base + i] - mean;
        s2 += d * d;
    }
    let rstd = inverseSqrt(subgroupAdd(s2) / f32(c) + p.eps);
    for (var i = lane; i < c; i += SG) {
        out[base + i] = (x[base + i] - mean) * rstd * gamma[i] + beta[i];
    }
}

// Scores row r (query q0 + r % q_chunk): scale, causal mask (key > query), softmax over
// the first `cols` entries, zeros in the padding up to `stride`.
@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(local_invocation_index) lidx: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = row_index(lidx, wid);
    if (row >= p.rows) {
        return;
    }
    let q = p.q0 + row % p.q_chunk;
    var limit = p.cols;
    if (p.causal != 0u) {
        limit = min(limit, q + 1u);
    }
    let base = row * p.stride;
    // online max and sum per lane, then combined across the subgroup
    var m = -3.0e38;
    var s = 0.0;
    for (var j = lane; j < limit; j += SG) {
        let v = out[base + j] * p.scale;
        let mn = max(m, v);
        s = s * exp(m - mn) + exp(v - mn);
        m = mn;
    }
    let mx = subgroupMax(m);
    let inv = 1.0 / subgroupAdd(s * exp(m - mx));
    for (var j = lane; j < p.stride; j += SG) {
        var v = 0.0;
        if (j < limit) {
            v = exp(out[base + j] * p.scale - mx) * inv;
        }
        out[base + j] = v;
    }
}
