// GEMM family: out[m, n] = sum_k A(m, k) * W[n, k] (+ bias[n]) (+ res[m, n]).
//
// One kernel serves `linear` (A = x, row-major [M, K]) and `conv2d` as an implicit GEMM
// (A = im2col of an NHWC feature map, computed on the fly, never stored). The prelude
// (see src/ops.rs) defines:
//   fn load_a(m: u32, k: u32, z: u32) -> f32   the A operand (batch z), zero outside the image
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
// memory. Accumulation in f32.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [TK][TM]
var<workgroup> Bs: array<f32, 1024>; // [TK][TN]

// A for linear (and attention's batched products): row m of batch z.
fn load_a_linear(m: u32, k: u32, z: u32) -> f32 {
    return x[p.a_off + (z / p.heads) * p.a_bs + (z % p.heads) * p.a_hs + m * p.a_rs + k];
}

// A for conv: column k = (tap, channel) with the channel fastest, matching the weight
// reordered to [Cout, KH, KW, Cin] at load; conv_pixel (gemm_common.wgsl) finds the
// input pixel, through the upsample if any, so the upsampled map is never stored.
fn load_a_conv(m: u32, k: u32, z: u32) -> f32 {
    let base = conv_pixel(m, k / p.in_c);
    if (base < 0) {
        return 0.0;
    }
    return x[u32(base) + k % p.in_c];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let z = wid.z;
    let w_base = (z / p.heads) * p.w_bs + (z % p.heads) * p.w_hs;
    let o_base = p.o_off + (z / p.heads) * p.o_bs + (z % p.heads) * p.o_hs;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.K; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let r = e / TK;
            let kk = e % TK;
            let k = k0 + kk;
            let m = m0 + r;
            var a = 0.0;
            if (m < p.M && k < p.K) {
                a = load_a(m, k, z);
            }
            As[kk * TM + r] = a;
            let n = n0 + r;
            var b = 0.0;
            if (n < p.N && k < p.K) {
                // k = (tap, channel of this slice); taps are w_tap apart in the weight
                b = w_at(p.w_off + w_base + n * p.w_rs + (k / p.in_c) * p.w_tap + k % p.in_c);
            }
            Bs[kk * TN + r] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = As[kk * TM + ty + 16u * i];
                bv[i] = Bs[kk * TN + tx + 16u * i];
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
        let m = m0 + ty + 16u * i;
        if (m >= p.M) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx + 16u * j;
            if (n >= p.N) {
                continue;
            }
            var v = acc[i * 4u + j];
            if (HAS_BIAS) {
                v += bias[p.b_off + n];
            }
            let o = o_base + m * p.o_rs + n;
            if (HAS_RES) {
                v += res[o];
            }
            out[o] = v;
        }
    }
}
