// GEMM family: out[m, n] = sum_k A(m, k) * W[n, k] (+ bias[n]) (+ res[m, n]).
//
// One kernel serves `linear` (A = x, row-major [M, K]) and `conv2d` as an implicit GEMM
// (A = im2col of an NHWC feature map, computed on the fly, never stored). The prelude
// (see src/ops.rs) defines:
//   const CONV: bool                     A is a conv's im2col (else rows of x)
//   w / fn w_at(i: u32) -> f32           the weight in its storage format (binding 2)
//   const HAS_BIAS: bool, const HAS_RES: bool
//
// Bindings:
//   0 p:    Params (uniform, gemm_common.wgsl)
//   1 x:    activations, f32, row-major ([M, K] for linear; [B, H, W, C] for conv)
//   2 w:    weight [N, K] row-major (conv: [Cout, KH, KW, Cin]), format from the prelude
//   3 bias: [N] f32 (a 1-element dummy when HAS_BIAS is false)
//   4 res:  [M, N] f32 residual added to the output (dummy when HAS_RES is false)
//   5 out:  [M, N] f32 (for conv: NHWC [B, OH, OW, Cout])
//
// Tiling: a 64x64 output tile per workgroup of 16x16 threads, each thread 4x4
// outputs strided by 16 (so neighbouring threads read neighbouring shared-memory
// words and write neighbouring output columns), K in steps of 16 through shared
// memory. Accumulation in f32. Each thread loads the same 4 rows of A and of W at the
// same column offset every K step, so row bases are computed once and the conv's
// (tap, channel) decode of k advances by TK without divisions.

@group(0) @binding(1) var<storage, read> x: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [TK][TM]
var<workgroup> Bs: array<f32, 1024>; // [TK][TN]

// One A row a thread loads: linear: the row's offset (-1 past M); conv: the batch's
// first input row and the output pixel's top-left input coordinates (b < 0 past M).
struct ARow {
    base: i32,
    iy0: i32,
    ix0: i32,
}

fn a_row(m: u32, z: u32) -> ARow {
    if (m >= p.M) {
        return ARow(-1, 0, 0);
    }
    if (CONV) {
        let ow = m % p.out_w;
        let t2 = m / p.out_w;
        let oh = t2 % p.out_h;
        let b = t2 / p.out_h;
        return ARow(i32(b * p.in_h), i32(oh * p.stride) - i32(p.pad_y), i32(ow * p.stride) - i32(p.pad_x));
    }
    return ARow(i32(p.a_off + (z / p.heads) * p.a_bs + (z % p.heads) * p.a_hs + m * p.a_rs), 0, 0);
}

// A(row, k) with k = (ky, kx, c) for convs (channel fastest, matching the weight
// reordered to [Cout, KH, KW, Cin]); the input is read through the upsample if any
// (nearest, gemm_common.wgsl), so the upsampled map is never stored.
fn load_a(r: ARow, k: u32, c: u32, kx: u32, ky: u32) -> f32 {
    if (r.base < 0) {
        return 0.0;
    }
    if (!CONV) {
        return x[u32(r.base) + k];
    }
    let iy = r.iy0 + i32(ky);
    let ix = r.ix0 + i32(kx);
    if (iy < 0 || ix < 0 || iy >= i32(p.lh) || ix >= i32(p.lw)) {
        return 0.0;
    }
    let sy = nearest(u32(iy), p.in_h, p.lh, p.scale_h);
    let sx = nearest(u32(ix), p.in_w, p.lw, p.scale_w);
    return x[((u32(r.base) + sy) * p.in_w + sx) * p.in_c + c];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let z = wid.z;
    let w_base = p.w_off + (z / p.heads) * p.w_bs + (z % p.heads) * p.w_hs;
    let o_base = p.o_off + (z / p.heads) * p.o_bs + (z % p.heads) * p.o_hs;
    // this thread's column of the K tile and its 4 rows (r0 + 16 i) of A and W
    let kk = tid % TK;
    let r0 = tid / TK;
    var arow: array<ARow, 4>;
    var wrow: array<i32, 4>;
    for (var i = 0u; i < 4u; i++) {
        arow[i] = a_row(m0 + r0 + 16u * i, z);
        let n = n0 + r0 + 16u * i;
        wrow[i] = select(-1, i32(w_base + n * p.w_rs), n < p.N);
    }
    // k = kk decoded as (ky, kx, c); advanced by TK per step below
    var c = kk % p.in_c;
    let t0 = kk / p.in_c;
    var kx = t0 % p.kw;
    var ky = t0 / p.kw;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.K; k0 += TK) {
        let k = k0 + kk;
        let k_ok = k < p.K;
        // weight column: the tap's row segment (taps w_tap apart) plus the channel
        let wcol = (ky * p.kw + kx) * p.w_tap + c;
        for (var i = 0u; i < 4u; i++) {
            var a = 0.0;
            var b = 0.0;
            if (k_ok) {
                a = load_a(arow[i], k, c, kx, ky);
                if (wrow[i] >= 0) {
                    b = w_at(u32(wrow[i]) + wcol);
                }
            }
            As[kk * TM + r0 + 16u * i] = a;
            Bs[kk * TN + r0 + 16u * i] = b;
        }
        c += TK;
        while (c >= p.in_c) {
            c -= p.in_c;
            kx += 1u;
            if (kx == p.kw) {
                kx = 0u;
                ky += 1u;
            }
        }
        workgroupBarrier();
        for (var q = 0u; q < TK; q++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = As[q * TM + ty + 16u * i];
                bv[i] = Bs[q * TN + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_out(m0 + ty + 16u * i, n0 + tx + 16u * j, o_base, acc[i * 4u + j]);
        }
    }
}
