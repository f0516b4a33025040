// Normalisation family: GroupNorm over NHWC feature maps, LayerNorm over rows, and the
// row softmax of chunked attention.
// Statistics in f32 in two passes (mean, then mean of squared deviations), which
// stays exact where E[x^2] - E[x]^2 would cancel. One workgroup per (group, batch)
// or per row; the prelude defines const SILU: bool (fuse the SiLU that follows most
// GroupNorms in the UNet and VAE).
//
// Bindings:
//   0 p:     Params (uniform)
//   1 x:     GroupNorm: [B, P, C] f32 (P = H*W pixels); LayerNorm: [R, C] f32
//   2 gamma: [C] f32
//   3 beta:  [C] f32
//   4 out:   same shape as x

// Params (one meaning per field, mirrored by `ops::norm::NormParams`):
//   GroupNorm: eps; pixels per image, channels of this map, groups in it, c_off = the
//     map's first channel in gamma/beta (a channel slice of a larger map)
//   LayerNorm: eps; rows, cols
//   softmax:   rows, cols = keys, stride (row length with padding), causal, scale,
//     q_chunk, q0 (row r holds query q0 + r % q_chunk)
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

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn finish(v: f32) -> f32 {
    if (SILU) {
        return v / (1.0 + exp(-v));
    }
    return v;
}

@compute @workgroup_size(256, 1, 1)
fn group_norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let g = wid.x;
    let b = wid.y;
    let cg = p.channels / p.groups;
    let n = p.pixels * cg;
    let base = b * p.pixels * p.channels + g * cg;
    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        s += x[base + (i / cg) * p.channels + i % cg];
    }
    let mean = reduce_sum(lid, s) / f32(n);
    var s2 = 0.0;
    for (var i = lid; i < n; i += WG) {
        let d = x[base + (i / cg) * p.channels + i % cg] - mean;
        s2 += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(lid, s2) / f32(n) + p.eps);
    for (var i = lid; i < n; i += WG) {
        // gamma/beta index: a channel slice of a larger map starts at c_off
        let c = p.c_off + g * cg + i % cg;
        let o = base + (i / cg) * p.channels + i % cg;
        out[o] = finish((x[o] - mean) * rstd * gamma[c] + beta[c]);
    }
}

@compute @workgroup_size(256, 1, 1)
fn layer_norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) {
        return;
    }
    let c = p.cols;
    let base = row * c;
    var s = 0.0;
    for (var i = lid; i < c; i += WG) {
        s += x[base + i];
    }
    let mean = reduce_sum(lid, s) / f32(c);
    var s2 = 0.0;
    for (var i = lid; i < c; i += WG) {
        let d = x[base + i] - mean;
        s2 += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(lid, s2) / f32(c) + p.eps);
    for (var i = lid; i < c; i += WG) {
        out[base + i] = finish((x[base + i] - mean) * rstd * gamma[i] + beta[i]);
    }
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// In-place softmax of score rows for chunked attention: `out` is [rows, stride] with
// rows = (batch * heads) * chunk, row r holding query q0 + r % chunk; the first
// `cols` (= keys) entries are scaled by `scale`, masked (key > query, with query
// q0 + row % q_chunk) when `causal` is 1, and normalised; the
// padding up to `stride` (= pixels field) is zeroed so a following GEMM can read
// whole vec4s. x, gamma and beta are not read. Max and sum in f32.
@compute @workgroup_size(256, 1, 1)
fn softmax_rows(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x + wid.y * 65535u;
    let nk = p.cols;
    let stride = p.stride;
    let q = p.q0 + row % p.q_chunk;
    let causal = p.causal == 1u;
    let base = row * stride;
    var mx = -3.0e38;
    for (var j = lid; j < nk; j += WG) {
        if (!(causal && j > q)) {
            mx = max(mx, out[base + j] * p.scale);
        }
    }
    mx = reduce_max(lid, mx);
    var s = 0.0;
    for (var j = lid; j < nk; j += WG) {
        if (!(causal && j > q)) {
            s += exp(out[base + j] * p.scale - mx);
        }
    }
    let inv = 1.0 / reduce_sum(lid, s);
    for (var j = lid; j < stride; j += WG) {
        var v = 0.0;
        if (j < nk && !(causal && j > q)) {
            v = exp(out[base + j] * p.scale - mx) * inv;
        }
        out[base + j] = v;
    }
}

// softmax_rows for CPU adapters (SwiftShader, llvmpipe) without subgroups: one
// invocation per row and no workgroup barriers. A CPU driver runs a barrier as a switch
// between every group of lanes; the 256-lane reduction above costs about a millisecond
// per row there (measured: 5 s for 4,096 rows of 256 in Chromium's SwiftShader). Same
// params as softmax_rows, plus the row count in c_off.
@compute @workgroup_size(64, 1, 1)
fn softmax_rows_serial(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = (wid.x + wid.y * 65535u) * 64u + lid3.x;
    if (row >= p.rows) {
        return;
    }
    let nk = p.cols;
    let stride = p.stride;
    let q = p.q0 + row % p.q_chunk;
    let causal = p.causal == 1u;
    let base = row * stride;
    var end = nk;
    if (causal) {
        end = min(nk, q + 1u);
    }
    var mx = -3.0e38;
    for (var j = 0u; j < end; j++) {
        mx = max(mx, out[base + j] * p.scale);
    }
    var s = 0.0;
    for (var j = 0u; j < end; j++) {
        s += exp(out[base + j] * p.scale - mx);
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < stride; j++) {
        var v = 0.0;
        if (j < end) {
            v = exp(out[base + j] * p.scale - mx) * inv;
        }
        out[base + j] = v;
    }
}

// GroupNorm and LayerNorm for CPU drivers without subgroups (Chromium's SwiftShader):
// one invocation per (group, batch) or per row, no barriers (see softmax_rows_serial).
// Sums run in order in f32; the two-pass form keeps the variance exact enough.
// GroupNorm takes 4 groups per workgroup: SwiftShader runs 4 invocations per SSE
// register, and a workgroup of one left three of its lanes idle.
@compute @workgroup_size(4, 1, 1)
fn group_norm_serial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let g = wid.x * 4u + lid.x;
    let b = wid.y;
    if (g >= p.groups) {
        return;
    }
    let cg = p.channels / p.groups;
    let n = p.pixels * cg;
    let base = b * p.pixels * p.channels + g * cg;
    var s = 0.0;
    for (var q = 0u; q < p.pixels; q++) {
        let o = base + q * p.channels;
        for (var j = 0u; j < cg; j++) {
            s += x[o + j];
        }
    }
    let mean = s / f32(n);
    var s2 = 0.0;
    for (var q = 0u; q < p.pixels; q++) {
        let o = base + q * p.channels;
        for (var j = 0u; j < cg; j++) {
            let d = x[o + j] - mean;
            s2 += d * d;
        }
    }
    let rstd = inverseSqrt(s2 / f32(n) + p.eps);
    let c0 = p.c_off + g * cg;
    for (var q = 0u; q < p.pixels; q++) {
        let o = base + q * p.channels;
        for (var j = 0u; j < cg; j++) {
            out[o + j] = finish((x[o + j] - mean) * rstd * gamma[c0 + j] + beta[c0 + j]);
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn layer_norm_serial(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = (wid.x + wid.y * 65535u) * 64u + lid3.x;
    if (row >= p.rows) {
        return;
    }
    let c = p.cols;
    let base = row * c;
    var s = 0.0;
    for (var i = 0u; i < c; i++) {
        s += x[base + i];
    }
    let mean = s / f32(c);
    var s2 = 0.0;
    for (var i = 0u; i < c; i++) {
        let d = x[base + i] - mean;
        s2 += d * d;
    }
    let rstd = inverseSqrt(s2 / f32(c) + p.eps);
    for (var i = 0u; i < c; i++) {
        out[base + i] = finish((x[base + i] - mean) * rstd * gamma[i] + beta[i]);
    }
}
