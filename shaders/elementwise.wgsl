// Elementwise family. The prelude defines `fn op(a: f32, b: f32) -> f32` for the
// entry point used (`map`: b is the broadcast operand or 0).
//
// Bindings:
//   0 p:   Params (uniform)
//   1 a:   [n] f32
//   2 b:   f32 operand (same shape, or per-row broadcast; not read by every entry point)
//   3 out: [n] f32 (map) / see entry point
//
// `gelu` is the exact erf form (diffusers' GELU / GEGLU default, approximate="none");
// WGSL has no erf, so erfc comes from Numerical Recipes' Chebyshev fit (fractional
// error < 1.2e-7), well inside the 1e-4 tolerance.

// Params: one meaning per field (mirrored by `ops::elementwise::ElementwiseParams`);
// each entry point reads its own.
struct Params {
    n: u32, mode: u32, row: u32, per_batch: u32,
    c1: u32, c2: u32, value: f32, keys: u32,
    keys4: u32, heads: u32, head_dim: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn erfc_nr(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(2.0 - r, r, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (2.0 - erfc_nr(x * 0.70710678118654752));
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn quick_gelu(x: f32) -> f32 {
    return x / (1.0 + exp(-1.702 * x));
}

fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

// out[i] = op(a[i], b[j]) where j depends on mode:
//   0: j = i (same shape), 1: j = (i / per_batch) * row + i % row (per-row
//   broadcast: b is [B, C] against a [B, P, C], row = C, per_batch = P * C), 2: no b.
@compute @workgroup_size(256, 1, 1)
fn map(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    var bv = 0.0;
    if (p.mode == 0u) {
        bv = b[i];
    } else if (p.mode == 1u) {
        bv = b[(i / p.per_batch) * p.row + i % p.row];
    }
    out[i] = op(a[i], bv);
}

// GEGLU: a is [R, 2F] (hidden | gate), out [R, F] = hidden * gelu(gate). F = row.
@compute @workgroup_size(256, 1, 1)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let r = i / p.row;
    let c = i % p.row;
    let base = r * 2u * p.row;
    out[i] = a[base + c] * gelu(a[base + p.row + c]);
}

// Channel concat: a [R, c1], b [R, c2] -> out [R, c1 + c2].
@compute @workgroup_size(256, 1, 1)
fn concat(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let w = p.c1 + p.c2;
    let r = i / w;
    let c = i % w;
    if (c < p.c1) {
        out[i] = a[r * p.c1 + c];
    } else {
        out[i] = b[r * p.c2 + c - p.c1];
    }
}

// Fill: out[i] = value (poisoning outputs in tests, zeroing).
@compute @workgroup_size(256, 1, 1)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    out[i] = p.value;
}

// Per-head transpose for chunked attention: a [B, N, H*D] (as the projections write
// it) -> out [B, H, D, Np] with Np = N rounded up to 4 and zeros in the padding, so
// that P.V reads 4 consecutive keys at a time: keys = N, keys4 = Np, heads = H,
// head_dim = D.
@compute @workgroup_size(256, 1, 1)
fn heads_transpose(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let np = p.keys4;
    let j = i % np;
    let t = i / np;
    let d = t % p.head_dim;
    let t2 = t / p.head_dim;
    let h = t2 % p.heads;
    let bb = t2 / p.heads;
    var v = 0.0;
    if (j < p.keys) {
        v = a[(bb * p.keys + j) * (p.heads * p.head_dim) + h * p.head_dim + d];
    }
    out[i] = v;
}
