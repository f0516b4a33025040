//! A CPU random generator that reproduces PyTorch's `torch.Generator("cpu")` bit for bit, so
//! that a seed gives the same initial latents (and the same per-step noise) as diffusers:
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)`.
//!
//! # What torch does (2.15, x86-64, verified against its `libtorch_cpu.so` and its output)
//!
//! * **Engine**: `at::mt19937` — the standard 32-bit Mersenne Twister, seeded with the low
//!   32 bits of the `u64` seed (`manual_seed(2**32 + 42)` equals `manual_seed(42)`).
//!   `manual_seed` also clears the cached Box–Muller value (below).
//! * **Uniforms**: a `float` uniform is one 32-bit draw: `(u32 & 0xFFFFFF) * 2^-24`.
//!   A `double` uniform is two draws `hi`, `lo` combined as `(hi << 32 | lo) & (2^53 - 1)`,
//!   times `2^-53`. Both are exact in their type.
//! * **`randn` with ≥ 16 elements** (float32, contiguous — `normal_fill`, AVX2 kernel): first
//!   draw `n` float uniforms into the output buffer. For each whole block of 16 (`i = 0, 16, …`
//!   while `i < n - 15`): `u1 = 1 - d[j]`, `u2 = d[j + 8]` for `j < 8`, and
//!   `d[j] = r·cos θ`, `d[j+8] = r·sin θ` with `r = sqrt(-2·log u1)`, `θ = (float)(2π)·u2`.
//!   If `n % 16 != 0`, the *last* 16 slots are refilled with 16 **fresh** uniforms and
//!   transformed again (so `n + 16` uniforms are used and the overlap is overwritten).
//!   The block does not touch the cached normal.
//! * **The block transform is float32 with Cephes polynomials** (`avx_mathfun.h`'s
//!   `log256_ps` and `sincos256_ps`), not libm: torch reports capability AVX512 here, but
//!   `normal_stub` registers no AVX512 kernel, so the AVX2 one runs. GCC contracted that
//!   source's separate `mul`/`add` intrinsics into FMAs; `log_cephes` and `sincos_cephes`
//!   replay the exact instruction sequence of the shipped binary (`NormalFill16<float,true>`),
//!   fused where it is fused, with `f32::mul_add` (always a correctly rounded FMA in Rust,
//!   also on wasm32), so the result is bit-exact on every target.
//! * **`randn` with < 16 elements**: per element, `at::normal_distribution<double>`: if a cached
//!   value exists, return it (and clear it); else `u1`, `u2` = two double uniforms,
//!   `r = sqrt(-2·log1p(-u2))`, `θ = 2π·u1`, cache `r·sin θ`, return `r·cos θ`; the f64 result
//!   is rounded to f32. So `randn(5)` leaves a cached value that the next small draw uses.
//!
//! `mean`/`std` enter as `fma(x, std, mean)` (torch's `_mm256_fmadd_ps` / `transformation::normal`);
//! for `randn` that is `x + 0`, which only turns `-0.0` into `+0.0`.
//!
//! # Exactness
//!
//! The ≥ 16 path is pure f32 arithmetic (adds, multiplies, FMAs, `sqrt`, int conversions) and
//! is bit-exact everywhere. The < 16 path calls f64 `ln_1p`/`sin`/`cos`: on Linux these are
//! glibc's, the very functions torch calls, so it is bit-exact there; on wasm32 Rust uses its
//! `libm` port (musl), which can differ from glibc in the last bit of an f64 — visible in the
//! f32 result only if the f64 lies within 1 f64-ulp of an f32 rounding boundary (≈ 2^-29 per
//! value), and then by 1 f32 ulp. Diffusers latents (`1×4×64×64`) and scheduler noise always take
//! the ≥ 16 path.
//!
//! Checked against torch: the goldens in `tests/rng.rs`, and once (not committed) 14.7 M
//! values — 300 seeds, each one generator drawing a mix of sizes 1–80 and 16384 (≈ 130 k
//! values on the < 16 path) — with 0 differing bits, both natively and as wasm32 under Node.
//!
//! Not modelled: torch's `DEFAULT` capability (no AVX2, or `ATEN_CPU_CAPABILITY=default`) whose
//! float block path calls glibc `logf`/`sincosf` and differs from AVX2 in the last bit, nor
//! aarch64 builds; dtypes other than float32; non-contiguous outputs.

/// PyTorch's CPU generator (`torch.Generator("cpu")`): mt19937 plus the cached second
/// Box–Muller value of `at::normal_distribution<double>`.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    mt: Mt19937,
    /// `CPUGeneratorImpl::next_double_normal_sample_`.
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`. Like torch, only the low 32 bits seed the
    /// engine.
    pub fn new(seed: u64) -> Self {
        TorchGenerator {
            mt: Mt19937::new(seed as u32),
            next_double_normal: None,
        }
    }

    /// The values of `torch.randn(n, generator=self, dtype=torch.float32)`, continuing this
    /// generator's stream exactly as torch does. Any shape with `n` elements gives the same
    /// values in row-major order (torch fills the contiguous buffer linearly).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        self.normal(n, 0.0, 1.0)
    }

    /// `torch.empty(n).normal_(mean, std, generator=self)` for float32 (what `randn` is with
    /// `mean = 0`, `std = 1`).
    fn normal(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        if n >= 16 {
            self.normal_fill(n, mean as f32, std as f32)
        } else {
            (0..n).map(|_| self.normal_f64(mean, std) as f32).collect()
        }
    }

    /// `at::uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        (self.mt.next_u32() & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0)
    }

    /// `at::uniform_real_distribution<double>(0, 1)`: 53 bits of `random64()`.
    fn uniform_f64(&mut self) -> f64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `at::normal_distribution<double>(mean, std)` with the generator's cached second value.
    fn normal_f64(&mut self, mean: f64, std: f64) -> f64 {
        let z = match self.next_double_normal.take() {
            Some(z) => z,
            None => {
                let u1 = self.uniform_f64();
                let u2 = self.uniform_f64();
                let r = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = 2.0 * core::f64::consts::PI * u1;
                self.next_double_normal = Some(r * theta.sin());
                r * theta.cos()
            }
        };
        z.mul_add(std, mean)
    }

    /// torch's `normal_fill` (AVX2 kernel) for `n >= 16`.
    fn normal_fill(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        debug_assert!(n >= 16);
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            normal_fill_16(block.try_into().unwrap(), mean, std);
        }
        if !n.is_multiple_of(16) {
            let tail: &mut [f32; 16] = (&mut data[n - 16..]).try_into().unwrap();
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            normal_fill_16(tail, mean, std);
        }
        data
    }
}

/// Box–Muller over one block: `d[0..8]` become `r·cos θ`, `d[8..16]` `r·sin θ`, as torch's
/// `NormalFill16<float, true>` (8 f32 lanes; each lane is independent, so a scalar loop).
fn normal_fill_16(d: &mut [f32; 16], mean: f32, std: f32) {
    const TWO_PI: f32 = f32::from_bits(0x40C9_0FDB); // (float)(2.0f * c10::pi<double>)
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let theta = TWO_PI * d[j + 8];
        let radius = (log_cephes(u1) * -2.0).sqrt();
        let (sin, cos) = sincos_cephes(theta);
        d[j] = (radius * cos).mul_add(std, mean);
        d[j + 8] = (radius * sin).mul_add(std, mean);
    }
}

/// `log256_ps` from torch's `avx_mathfun.h` (Cephes `logf`), one lane, with the FMAs GCC
/// formed in the shipped binary. NaN for `x <= 0`.
fn log_cephes(x: f32) -> f32 {
    // The binary's constants, bit for bit (the source's decimal literals rounded to f32).
    const SQRTHF: f32 = f32::from_bits(0x3F35_04F3); // 0.707106781186547524
    const P: [f32; 9] = [
        f32::from_bits(0x3D90_21BB), // 7.0376836292E-2
        f32::from_bits(0xBDEB_D1B8), // -1.1514610310E-1
        f32::from_bits(0x3DEF_251A), // 1.1676998740E-1
        f32::from_bits(0xBDFE_5D4F), // -1.2420140846E-1
        f32::from_bits(0x3E11_E9BF), // 1.4249322787E-1
        f32::from_bits(0xBE2A_AE50), // -1.6668057665E-1
        f32::from_bits(0x3E4C_CEAC), // 2.0000714765E-1
        f32::from_bits(0xBE7F_FFFC), // -2.4999993993E-1
        f32::from_bits(0x3EAA_AAAA), // 3.3333331174E-1
    ];
    const Q1: f32 = f32::from_bits(0xB95E_8083); // -2.12194440e-4
    const Q2: f32 = f32::from_bits(0x3F31_8000); // 0.693359375

    let invalid = x <= 0.0;
    let x = x.max(f32::MIN_POSITIVE); // cut off denormals
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Keep the mantissa, exponent of 0.5: x in [0.5, 1).
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let tmp = if x < SQRTHF { x } else { 0.0 };
    if x < SQRTHF {
        e -= 1.0;
    }
    x = (x + -1.0) + tmp;
    let z = x * x;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    let x = e.mul_add(Q2, x + y);
    if invalid { f32::NAN } else { x }
}

/// `sincos256_ps` from torch's `avx_mathfun.h` (Cephes `sinf`/`cosf`), one lane, with the FMAs
/// GCC formed in the shipped binary. Returns `(sin, cos)`. Accurate for `|x| < 8192`.
fn sincos_cephes(x: f32) -> (f32, f32) {
    const FOPI: f32 = f32::from_bits(0x3FA2_F983); // 4/π = 1.27323954473516
    const MINUS_DP1: f32 = f32::from_bits(0xBF49_0000); // -0.78515625
    const MINUS_DP2: f32 = f32::from_bits(0xB97D_A000); // -2.4187564849853515625e-4
    const MINUS_DP3: f32 = f32::from_bits(0xB322_2169); // -3.77489497744594108e-8
    const SINCOF: [f32; 3] = [
        f32::from_bits(0xB94C_A1F9), // -1.9515295891E-4
        f32::from_bits(0x3C08_839E), // 8.3321608736E-3
        f32::from_bits(0xBE2A_AAA3), // -1.6666654611E-1
    ];
    const COSCOF: [f32; 3] = [
        f32::from_bits(0x37CC_F5CE), // 2.443315711809948E-005
        f32::from_bits(0xBAB6_061A), // -1.388731625493765E-003
        f32::from_bits(0x3D2A_AAA5), // 4.166664568298827E-002
    ];
    const SIGN: u32 = 0x8000_0000;

    let sign_in = x.to_bits() & SIGN;
    let ax = x.abs();
    // j = (int)(|x|·4/π), rounded up to even (cvttps2dq truncates; |x|·4/π < 2^31 here).
    let j = ((ax * FOPI) as i32).wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let poly_is_cos = (j & 2) == 0; // the mask selects the "sin polynomial" lanes as 0
    let sign_cos = ((!j.wrapping_sub(2) & 4) as u32) << 29;
    let sign_sin = sign_in ^ swap_sign_sin;

    // Extended-precision reduction x - y·π/4.
    let x = y.mul_add(MINUS_DP1, ax);
    let x = MINUS_DP2.mul_add(y, x);
    let x = y.mul_add(MINUS_DP3, x);

    let z = x * x;
    // cos polynomial on [0, π/4]
    let mut yc = COSCOF[0].mul_add(z, COSCOF[1]);
    yc = yc.mul_add(z, COSCOF[2]);
    yc *= z;
    yc = z.mul_add(yc, -(z * 0.5));
    yc += 1.0;
    // sin polynomial on [0, π/4]
    let mut ys = SINCOF[0].mul_add(z, SINCOF[1]);
    ys = ys.mul_add(z, SINCOF[2]);
    ys *= z;
    ys = x.mul_add(ys, x);

    // poly_is_cos lanes: sin = ys, cos = yc; else sin = yc, cos = ys. The binary forms each by
    // masking and adding zeros (x + 0.0 and 0.0 + x are exact, -0.0 + 0.0 = +0.0): replay it.
    let (ysin1, ysin2) = if poly_is_cos { (0.0, ys) } else { (yc, 0.0) };
    let s = ysin2 + ysin1;
    let c = (ys - ysin2) + (yc - ysin1);
    (
        f32::from_bits(s.to_bits() ^ sign_sin),
        f32::from_bits(c.to_bits() ^ sign_cos),
    )
}

/// The 32-bit Mersenne Twister (MT19937), as `at::mt19937` / `std::mt19937`.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl core::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            index: Self::N,
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..Self::N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % Self::N] & LOWER);
            let mag = if y & 1 != 0 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + Self::M) % Self::N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_known_answers() {
        // C++11 [rand.predef]: the 10000th output of a default-constructed mt19937 (seed 5489).
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
        // First outputs for seed 5489 (reference mt19937ar).
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        assert_eq!(mt.next_u32(), 581_869_302);
    }

    #[test]
    fn cephes_log_and_sincos_are_close_to_libm() {
        for i in 1..=4096 {
            let u = i as f32 / 4096.0;
            let l = log_cephes(u);
            assert!((l as f64 - (u as f64).ln()).abs() <= 2e-7 * (1.0 + (u as f64).ln().abs()));
            let t = u * 6.283_185_5;
            let (s, c) = sincos_cephes(t);
            assert!((s as f64 - (t as f64).sin()).abs() < 3e-7, "sin {t}");
            assert!((c as f64 - (t as f64).cos()).abs() < 3e-7, "cos {t}");
        }
        assert!(log_cephes(0.0).is_nan());
        assert_eq!(log_cephes(1.0), 0.0);
    }
}
