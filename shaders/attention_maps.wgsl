// Attention family, per-word maps (DAAM, "What the DAAM"): the cross-attention
// probabilities of one batch item over a range of prompt tokens, summed over heads,
// resized to the latent grid and added to an accumulator. The flash attention never
// stores its scores, so this recomputes them for the few (<= 77) keys of the text.
//
// `probs`: one thread per query i of batch item `b`: per head, a first pass over the
// keys for the softmax's max and sum, a second for the tokens' probabilities, added
// to sum[t, i] (the thread owns its row: no race). `resize_add`: one thread per
// accumulator element (t, y, x): PyTorch's `interpolate(mode="bilinear",
// align_corners=False)` of sum[t] from (hl, wl) to (h, w), added to acc.
//
// Bindings:
//   0 p:    Params (uniform)
//   1 q:    [B, Nq, H*D] f32 (queries, heads interleaved in channels)
//   2 k:    [B, Nk, H*D] f32
//   3 sum:  [T, Nq] f32 (this layer's map, heads summed)
//   4 acc:  [T, h, w] f32 (all layers and calls so far)

struct Params {
    nq: u32, nk: u32, heads: u32, d: u32,
    batch: u32, t0: u32, tokens: u32, scale: f32,
    hl: u32, wl: u32, h: u32, w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> sum: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;

fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

fn score(qb: u32, kb: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.d; c++) {
        s += q[qb + c] * k[kb + c];
    }
    return s * p.scale;
}

@compute @workgroup_size(256, 1, 1)
fn probs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.nq) { return; }
    let c = p.heads * p.d;
    for (var t = 0u; t < p.tokens; t++) {
        sum[t * p.nq + i] = 0.0;
    }
    for (var hd = 0u; hd < p.heads; hd++) {
        let qb = (p.batch * p.nq + i) * c + hd * p.d;
        let kb0 = p.batch * p.nk * c + hd * p.d;
        var m = -3.4e38;
        for (var j = 0u; j < p.nk; j++) {
            m = max(m, score(qb, kb0 + j * c));
        }
        var l = 0.0;
        for (var j = 0u; j < p.nk; j++) {
            l += exp(score(qb, kb0 + j * c) - m);
        }
        let inv = 1.0 / l;
        for (var t = 0u; t < p.tokens; t++) {
            let j = p.t0 + t;
            sum[t * p.nq + i] += exp(score(qb, kb0 + j * c) - m) * inv;
        }
    }
}

// PyTorch's area_pixel_compute_source_index (align_corners=False, not cubic).
fn source(scale: f32, dst: u32) -> f32 {
    return max(scale * (f32(dst) + 0.5) - 0.5, 0.0);
}

@compute @workgroup_size(256, 1, 1)
fn resize_add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = index(gid);
    let plane = p.h * p.w;
    if (e >= p.tokens * plane) { return; }
    let t = e / plane;
    let y = (e % plane) / p.w;
    let x = e % p.w;
    let sy = source(f32(p.hl) / f32(p.h), y);
    let sx = source(f32(p.wl) / f32(p.w), x);
    let y0 = u32(sy);
    let x0 = u32(sx);
    let y1 = min(y0 + 1u, p.hl - 1u);
    let x1 = min(x0 + 1u, p.wl - 1u);
    let ly = sy - f32(y0);
    let lx = sx - f32(x0);
    let base = t * p.nq;
    let v00 = sum[base + y0 * p.wl + x0];
    let v01 = sum[base + y0 * p.wl + x1];
    let v10 = sum[base + y1 * p.wl + x0];
    let v11 = sum[base + y1 * p.wl + x1];
    acc[e] += (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11);
}
