// GEMM family, shared part (prepended to gemm.wgsl, gemm_cpu.wgsl and gemm_subgroup.wgsl):
// the Params block, the bias/residual/output bindings and their epilogue, and the
// implicit-GEMM addressing of a conv.
//
// Params: sizes, conv geometry, then a batched/strided layout (workgroup z = batch *
// heads + head): A row m of batch z starts at a_off + b*a_bs + h*a_hs + m*a_rs, W row n
// at w_off + b*w_bs + h*w_hs + n*w_rs, out row m at o_off + b*o_bs + h*o_hs + m*o_rs.
// A plain linear layer is a_rs = w_rs = K, o_rs = N, the rest 0, heads 1; attention's
// two products use the strides; a conv computes its A rows with conv_pixel. A channel
// slice of a conv (maps split by channels to fit a binding) reads weight rows from
// w_off with taps w_tap apart (the full Cin) and the bias from b_off.
struct Params {
    M: u32, N: u32, K: u32, heads: u32,
    in_h: u32, in_w: u32, in_c: u32, kw: u32,
    out_h: u32, out_w: u32, stride: u32, pad_y: u32,
    pad_x: u32, lh: u32, a_rs: u32, w_rs: u32,
    o_rs: u32, a_bs: u32, a_hs: u32, w_bs: u32,
    w_hs: u32, o_bs: u32, o_hs: u32, a_off: u32,
    o_off: u32, w_off: u32, w_tap: u32, b_off: u32,
    // the conv's input seen through a nearest upsample to lh x lw (lh = in_h: none)
    lw: u32, scale_h: f32, scale_w: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// The epilogue: out[m, n] = v (+ bias[n]) (+ res[m, n]); rows and columns past the
// matrix are not stored.
fn store_out(m: u32, n: u32, o_base: u32, v: f32) {
    if ((m >= p.M) | (n >= p.N)) {
        return;
    }
    var r = v;
    if (HAS_BIAS) {
        r += bias[p.b_off + n];
    }
    let o = o_base + m * p.o_rs + n;
    if (HAS_RES) {
        r += res[o];
    }
    out[o] = r;
}

// PyTorch's nearest_idx: the source of output index `dst` when `n_in` grows to `n_out`:
// halving when the size doubles (diffusers' Upsample2D), else floor(dst * (in / out))
// in f32 (the UNet at latent sizes that are not multiples of 8 upsamples to its skip
// connection's size). `scale` = f32(n_in) / f32(n_out), computed on the CPU as torch does.
fn nearest(dst: u32, n_in: u32, n_out: u32, scale: f32) -> u32 {
    if (n_out == n_in) {
        return dst;
    }
    if (n_out == 2u * n_in) {
        return dst >> 1u;
    }
    return min(u32(floor(f32(dst) * scale)), n_in - 1u);
}

// Offset (in floats) of input pixel (b, iy, ix)'s channel 0 for output row m = (b, oh, ow)
// at tap t = (ky, kx), or -1 inside the zero padding.
fn conv_pixel(m: u32, t: u32) -> i32 {
    let kx = t % p.kw;
    let ky = t / p.kw;
    let ow = m % p.out_w;
    let t2 = m / p.out_w;
    let oh = t2 % p.out_h;
    let b = t2 / p.out_h;
    let iy = i32(oh * p.stride + ky) - i32(p.pad_y);
    let ix = i32(ow * p.stride + kx) - i32(p.pad_x);
    if (iy < 0 || ix < 0 || iy >= i32(p.lh) || ix >= i32(p.lw)) {
        return -1;
    }
    let sy = nearest(u32(iy), p.in_h, p.lh, p.scale_h);
    let sx = nearest(u32(ix), p.in_w, p.lw, p.scale_w);
    return i32(((b * p.in_h + sy) * p.in_w + sx) * p.in_c);
}
