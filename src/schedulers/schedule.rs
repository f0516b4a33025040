//! The noise schedule (betas → ᾱ_t) and the few torch/numpy routines the schedulers
//! build their timesteps and sigmas with, reproduced to the bit.
//!
//! diffusers builds the schedule with float32 torch ops and the inference timesteps and
//! sigmas with float64 numpy, then steps in float32. The details that decide the last
//! bits, all checked against torch 2.15 / numpy 2.4 by the fixtures of tests/schedulers.rs:
//! - `torch.linspace(a, b, n, dtype=float32)` computes `start + step·i` for the first
//!   half and `end − step·(n−1−i)` for the second, in float32 with a fused multiply-add
//!   (what its AVX2/AVX-512 kernels do; torch's non-vectorised "DEFAULT" build rounds
//!   twice and differs in the last bit of about 15% of the betas, ~1e-7 relative).
//! - `torch.cumprod` on the CPU accumulates float32 in float64 and rounds each output.
//! - `np.round` rounds half to even; `np.arange` with a float step fills
//!   `start + i·((start + step) − start)`; `np.interp` is `slope·(x − x_j) + y_j`.

use super::config::{BetaSchedule, SchedulerConfig};
use crate::error::{Error, Result};

/// The betas of `config`, as float32 like diffusers' `self.betas`.
pub fn betas(config: &SchedulerConfig) -> Vec<f32> {
    let t = config.num_train_timesteps;
    if let Some(b) = &config.trained_betas {
        return b.iter().map(|&x| x as f32).collect();
    }
    match config.beta_schedule {
        BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, t),
        BetaSchedule::ScaledLinear => {
            // torch.linspace(beta_start**0.5, beta_end**0.5, T) ** 2: the square roots in
            // Python float64, the square in float32.
            torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), t)
                .into_iter()
                .map(|x| x * x)
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar_cosine(t),
    }
}

/// diffusers' `betas_for_alpha_bar(T)` with the cosine ᾱ: float64 Python maths, then a
/// float32 tensor.
fn betas_for_alpha_bar_cosine(t: usize) -> Vec<f32> {
    let alpha_bar = |x: f64| {
        ((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..t)
        .map(|i| {
            let t1 = i as f64 / t as f64;
            let t2 = (i + 1) as f64 / t as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr`: shifts and scales √ᾱ so that the last
/// training step has ᾱ = 0 (Lin et al. 2023, algorithm 1), in float32 like the original.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    let mut sqrt: Vec<f32> = torch_cumprod(&alphas).into_iter().map(f32::sqrt).collect();
    let first = sqrt[0];
    let last = sqrt[sqrt.len() - 1];
    let scale = first / (first - last);
    for s in &mut sqrt {
        *s -= last;
        *s *= scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|&s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// `torch.cumprod` of a float32 tensor on the CPU: a float64 running product, each
/// output rounded to float32.
pub fn torch_cumprod(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU (see the module docs).
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (a, b) = (start as f32, end as f32);
    match n {
        0 => return vec![],
        1 => return vec![a],
        _ => {}
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

/// `np.linspace(start, stop, num)` in float64 (endpoint included).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` in float64 for a float `step`: the length is
/// `ceil((stop − start) / step)`, element 1 is `start + step`, element i ≥ 2 is
/// `start + i·delta` with `delta = (start + step) − start` (numpy's `DOUBLE_fill`).
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let len = len as usize;
    let next = start + step;
    let delta = next - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)` for one point, in float64.
pub fn np_interp_grid(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    let last = (n - 1) as f64;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    // slope = (fp[j+1] − fp[j]) / (xp[j+1] − xp[j]), and xp[j+1] − xp[j] = 1.
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    (y1 - y0) * (x - j as f64) + y0
}

/// σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training step, float32 like diffusers.
pub fn sigmas_from_alphas_cumprod(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// Looks up ᾱ at a timestep the schedule computed, or says which step fell off the table.
pub(crate) fn alpha_at(alphas_cumprod: &[f32], t: i64, what: &str) -> Result<f32> {
    usize::try_from(t)
        .ok()
        .and_then(|i| alphas_cumprod.get(i).copied())
        .ok_or_else(|| Error::Config {
            file: "scheduler/scheduler_config.json".into(),
            message: format!(
                "{what}: timestep {t} is outside the {} training timesteps \
                     (check `steps_offset` and the number of inference steps)",
                alphas_cumprod.len()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_arange_matches_numpy_lengths() {
        // np.arange(1000, 0, -1000/7) has 7 elements; -1000/3 has 3.
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 7.0).len(), 7);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        assert_eq!(
            np_arange(1000.0, 0.0, -50.0),
            (0..20)
                .map(|i| 1000.0 - 50.0 * i as f64)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn np_linspace_endpoints() {
        let y = np_linspace(0.0, 999.0, 4);
        assert_eq!(y, vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
    }

    #[test]
    fn interp_on_grid_is_exact() {
        let fp = [1.0f32, 2.0, 4.0];
        assert_eq!(np_interp_grid(1.0, &fp), 2.0);
        assert_eq!(np_interp_grid(1.5, &fp), 3.0);
        assert_eq!(np_interp_grid(7.0, &fp), 4.0);
    }
}
