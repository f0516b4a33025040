// GEMM family, subgroup variant: out[m, n] = sum_k A(m, k) * W[n, k] (+ bias) (+ res).
// Same operands, bindings and Params as gemm.wgsl; used where the adapter has
// subgroups of a fixed size SG (lavapipe: 8 lanes of a 256-bit SIMD register).
//
// Each subgroup computes an (RT * SG) x SG output tile: lane l owns column n0 + l and
// all RT * SG rows. Per step of 4 along K, lane l loads row n0 + l of W and rows
// m0 + q * SG + l of A (4 contiguous floats each), then broadcasts each lane's A values
// to the others with subgroupShuffle, so every loaded A value feeds SG lanes' FMAs without shared memory
// or barriers (on CPU drivers a shuffle is one register permute; a load is a gather).
//
// The prelude defines: const SG: u32, const RT: u32 (row tiles), const SUBGROUPS: u32
// (per workgroup), fn a_base(m, t, z) -> i32 (see below), the weight
// binding `w` with fn w4(i) -> vec4<f32> (i % 4 == 0), const HAS_BIAS, const HAS_RES.
// Requires K % 4 == 0 and, for convs, Cin % 4 == 0 (the caller falls back to gemm.wgsl
// otherwise).
//
// Bindings:
//   0 p:    Params (uniform, gemm_common.wgsl)
//   1 x:    activations f32 ([M, K] linear; NHWC [B, H, W, C] conv with C % 4 == 0)
//   2 w:    weight [N, K] in the prelude's storage format
//   3 bias: [N] f32 (dummy when HAS_BIAS is false)
//   4 res:  [M, N] f32 (dummy when HAS_RES is false)
//   5 out:  [M, N] f32

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;


// Offset (in floats) of the A row segment a lane reads at tap t (a conv's (ky, kx);
// linear layers have one tap spanning all of K), or -1 inside the zero padding.
fn a_base_linear(m: u32, t: u32, z: u32) -> i32 {
    return i32(p.a_off + (z / p.heads) * p.a_bs + (z % p.heads) * p.a_hs + m * p.a_rs);
}

fn a_base_conv(m: u32, t: u32, z: u32) -> i32 {
    return conv_pixel(m, t);
}

@compute @workgroup_size(SUBGROUPS * SG, 1, 1)
fn main(
    @builtin(local_invocation_index) lidx: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let sg = lidx / SG;
    let m0 = wid.y * (RT * SG);
    let n0 = (wid.x * SUBGROUPS + sg) * SG;
    if (n0 >= p.N) {
        return; // the whole subgroup: no shuffle partner is left waiting
    }
    let z = wid.z;
    let bz = z / p.heads;
    let hz = z % p.heads;
    let n = n0 + lane;
    let n_ok = n < p.N;
    var acc: array<f32, RT * SG>;
    for (var r = 0u; r < RT * SG; r++) {
        acc[r] = 0.0;
    }
    // K = taps x in_c, in_c % 4 == 0; the index maths runs once per tap, not per element.
    let taps = p.K / p.in_c;
    for (var t = 0u; t < taps; t++) {
        var abase: array<i32, RT>;
        for (var q = 0u; q < RT; q++) {
            abase[q] = -1;
            let m_row = m0 + q * SG + lane;
            if (m_row < p.M) {
                abase[q] = a_base(m_row, t, z);
            }
        }
        let wbase = p.w_off + bz * p.w_bs + hz * p.w_hs + n * p.w_rs + t * p.w_tap;
        for (var c = 0u; c < p.in_c; c += 4u) {
            var b = vec4<f32>(0.0);
            if (n_ok) {
                b = w4(wbase + c);
            }
            for (var q = 0u; q < RT; q++) {
                var a = vec4<f32>(0.0);
                if (abase[q] >= 0) {
                    a = x[(u32(abase[q]) + c) >> 2u];
                }
                for (var r = 0u; r < SG; r++) {
                    let ar = subgroupShuffle(a, r);
                    let i = q * SG + r;
                    acc[i] = fma(ar.x, b.x, fma(ar.y, b.y, fma(ar.z, b.z, fma(ar.w, b.w, acc[i]))));
                }
            }
        }
    }
    if (!n_ok) {
        return;
    }
    var bv = 0.0;
    if (HAS_BIAS) {
        bv = bias[p.b_off + n];
    }
    for (var r = 0u; r < RT * SG; r++) {
        let m = m0 + r;
        if (m < p.M) {
            let o = p.o_off + bz * p.o_bs + hz * p.o_hs + m * p.o_rs + n;
            var v = acc[r] + bv;
            if (HAS_RES) {
                v += res[o];
            }
            out[o] = v;
        }
    }
}
