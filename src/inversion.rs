//! Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov and Michaeli, CVPR 2024;
//! reference code `inbarhub/DDPM_inversion`, `ddm_inversion/inversion_utils.py`), the
//! arithmetic between two UNet calls, on the CPU in f32 like the schedulers, in the
//! reference's operation order.
//!
//! With η = 1 every step of the DDPM sampler adds `σ_t·z_t`. Inverting an image `x₀`
//! draws every noisy level independently, `x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε_t`
//! ([`Trajectory::sample`]), then finds for each step the `z_t` that makes the sampler
//! go exactly from `x_t` to `x_{t−1}` ([`Trajectory::invert_step`]). Running the sampler
//! again from `x_T` with those `z_t` gives `x₀` back; with another prompt it gives an
//! edit that keeps the image's structure. RadEdit's masks act on top of it
//! ([`crate::pipeline`]; docs/WORKBENCH.md).
//!
//! Indices follow the reference: `xts[0] = x₀`, `xts[i]` is the level of call
//! `k = n − i` (call 0 is the noisiest), and `zs[i]` takes `xts[i + 1]` to `xts[i]`.

use crate::rng::TorchGenerator;

/// `σ_t²` of DDIM with η = 1 (inbarhub's `get_variance`):
/// `(1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)`; 0 for the last step when `ᾱ_prev` = 1.
pub fn variance(a_t: f32, a_prev: f32) -> f32 {
    ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev)
}

/// The sampler's mean for `x_{t−1}` from `x_t` and the noise prediction (inbarhub's
/// `reverse_step` before the noise): `√ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − η·σ²)·ε`.
pub fn step_mean(x: &[f32], eps: &[f32], a_t: f32, a_prev: f32, eta: f32) -> Vec<f32> {
    let var = variance(a_t, a_prev);
    let (sqrt_b, sqrt_a) = ((1.0 - a_t).sqrt(), a_t.sqrt());
    let dir = (1.0 - a_prev - eta * var).sqrt();
    let sqrt_a_prev = a_prev.sqrt();
    x.iter()
        .zip(eps)
        .map(|(&x, &e)| {
            let x0 = (x - sqrt_b * e) / sqrt_a;
            sqrt_a_prev * x0 + dir * e
        })
        .collect()
}

/// One step of the sampler with η and the noise map `z` (inbarhub's `reverse_step` with
/// `variance_noise`): `mean + η·σ·z`.
pub fn reverse_step(
    x: &[f32],
    eps: &[f32],
    (a_t, a_prev): (f32, f32),
    eta: f32,
    z: &[f32],
) -> Vec<f32> {
    let sigma = eta * variance(a_t, a_prev).sqrt();
    let mut out = step_mean(x, eps, a_t, a_prev, eta);
    if eta > 0.0 {
        for (o, &z) in out.iter_mut().zip(z) {
            *o += sigma * z;
        }
    }
    out
}

/// An image's inverted trajectory: the noisy levels and the noise maps between them.
pub struct Trajectory {
    /// `xts[i]` for `i` in `0..=levels`; `xts[0]` is the image's latents.
    pub xts: Vec<Vec<f32>>,
    /// `zs[i]` takes `xts[i + 1]` to `xts[i]`; filled by [`Trajectory::invert_step`].
    pub zs: Vec<Vec<f32>>,
}

impl Trajectory {
    /// `xts[1..=levels]` drawn as inbarhub's `sample_xts_from_x0` draws them, the least
    /// noisy first, one `randn_like(x₀)` each from `generator`; `alphas[k]` are the calls'
    /// `(ᾱ_t, ᾱ_prev)` (call 0 the noisiest) of an `n`-call schedule. Only the levels an
    /// edit needs are drawn (`levels = n − skip`): the reference draws all `n`, and the
    /// first `levels` draws are the same.
    pub fn sample(
        x0: &[f32],
        alphas: &[(f32, f32)],
        levels: usize,
        generator: &mut TorchGenerator,
    ) -> Self {
        let n = alphas.len();
        let mut xts = Vec::with_capacity(levels + 1);
        xts.push(x0.to_vec());
        for i in 1..=levels {
            let a = alphas[n - i].0;
            let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
            let eps = generator.randn(x0.len());
            xts.push(
                x0.iter()
                    .zip(&eps)
                    .map(|(&x, &e)| x * sa + e * sb)
                    .collect(),
            );
        }
        Trajectory {
            xts,
            zs: vec![Vec::new(); levels],
        }
    }

    /// The levels drawn (`n − skip`).
    pub fn levels(&self) -> usize {
        self.zs.len()
    }

    /// Inverts step `i` (`xts[i + 1]` → `xts[i]`, call `n − 1 − i`) given the noise
    /// prediction at `xts[i + 1]` (inbarhub's `inversion_forward_process`): `z_i` is what
    /// the sampler needs to land on `xts[i]`, and `xts[i]` becomes the level it then
    /// lands on (the reference's "correction", equal up to rounding). Where the step's
    /// σ is 0 (the last one), `z` is 0 and `xts[0]` stays the image's latents (the
    /// reference zeroes `zs[0]`; its `xts[0]` would be `0 · ∞`).
    pub fn invert_step(&mut self, i: usize, eps: &[f32], (a_t, a_prev): (f32, f32), eta: f32) {
        let sigma = eta * variance(a_t, a_prev).sqrt();
        let mu = step_mean(&self.xts[i + 1], eps, a_t, a_prev, eta);
        if i == 0 || sigma == 0.0 || !sigma.is_finite() {
            self.zs[i] = vec![0.0; mu.len()];
            return;
        }
        let z: Vec<f32> = self.xts[i]
            .iter()
            .zip(&mu)
            .map(|(&x, &m)| (x - m) / sigma)
            .collect();
        self.xts[i] = mu.iter().zip(&z).map(|(&m, &z)| m + sigma * z).collect();
        self.zs[i] = z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any noise prediction inverts: the sampler run back with the found `z` lands on
    /// the drawn levels, and at the end on the image itself where σ = 0 is not involved.
    #[test]
    fn the_sampler_retraces_the_inverted_levels() {
        let alphas = [(0.1f32, 0.3f32), (0.3, 0.6), (0.6, 0.9), (0.9, 1.0)];
        let x0: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut generator = TorchGenerator::new(7);
        let mut tr = Trajectory::sample(&x0, &alphas, 4, &mut generator);
        let eps = |x: &[f32]| x.iter().map(|v| 0.5 * v + 0.1).collect::<Vec<f32>>();
        for i in (0..4).rev() {
            let e = eps(&tr.xts[i + 1]);
            tr.invert_step(i, &e, alphas[4 - 1 - i], 1.0);
        }
        assert!(tr.zs[0].iter().all(|&z| z == 0.0));
        assert_eq!(tr.xts[0], x0);
        let mut x = tr.xts[4].clone();
        for k in 0..3 {
            let i = 4 - 1 - k;
            x = reverse_step(&x, &eps(&x), alphas[k], 1.0, &tr.zs[i]);
            let worst = x
                .iter()
                .zip(&tr.xts[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "level {i}: {worst}");
        }
    }

    #[test]
    fn the_last_step_has_no_variance() {
        assert_eq!(variance(0.9, 1.0), 0.0);
        assert!(variance(0.5, 0.8) > 0.0);
    }
}
