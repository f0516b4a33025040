// Normalisation family: GroupNorm over NHWC feature maps and LayerNorm over rows.
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

struct Params {
    pixels: u32, channels: u32, groups: u32, _pad: u32,
    eps: f32, _pad1: u32, _pad2: u32, _pad3: u32,
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
        let c = g * cg + i % cg;
        let o = base + (i / cg) * p.channels + i % cg;
        out[o] = finish((x[o] - mean) * rstd * gamma[c] + beta[c]);
    }
}

@compute @workgroup_size(256, 1, 1)
fn layer_norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x + wid.y * 65535u;
    if (row >= p.pixels) {
        return;
    }
    let c = p.channels;
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
