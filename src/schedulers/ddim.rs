//! DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), diffusers'
//! `DDIMScheduler` (scheduling_ddim.py) with η = 0: the deterministic sampler.
//! η > 0 (fresh noise every step) and dynamic thresholding are not implemented.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{alpha_at, np_arange, np_linspace};
use super::{Scheduler, SchedulerKind, alphas_cumprod, check_lengths, unsupported};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Ddim {
    timesteps: Vec<f32>,
    /// (ᾱ_t, ᾱ_prev) of each call; ᾱ_prev is `final_alpha_cumprod` past the start.
    alphas: Vec<(f32, f32)>,
    prediction_type: PredictionType,
    /// `clip_sample_range` as float32 when `clip_sample` is on.
    clip: Option<f32>,
    next: usize,
}

impl Ddim {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let kind = SchedulerKind::Ddim;
        if config.thresholding {
            return Err(unsupported(
                kind,
                "dynamic thresholding (`thresholding`)".into(),
            ));
        }
        let n = num_inference_steps;
        let t_train = config.num_train_timesteps as i64;
        let ac = alphas_cumprod(kind, config);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            ac[0]
        };

        // set_timesteps (descending).
        let timesteps: Vec<i64> = match config.timestep_spacing.unwrap_or(TimestepSpacing::Leading)
        {
            TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|x| x.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / n as i64;
                (0..n as i64)
                    .rev()
                    .map(|i| i * ratio + config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                np_arange(t_train as f64, 0.0, -(t_train as f64 / n as f64))
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64 - 1)
                    .collect()
            }
        };

        // step(): prev_timestep = timestep − T // n, whatever the spacing.
        let ratio = t_train / n as i64;
        let alphas = timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let what = format!("DDIM call {i}");
                let a_t = alpha_at(&ac, t, &what)?;
                let prev = t - ratio;
                let a_prev = if prev >= 0 {
                    alpha_at(&ac, prev, &what)?
                } else {
                    final_alpha_cumprod
                };
                Ok((a_t, a_prev))
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(Ddim {
            timesteps: timesteps.iter().map(|&t| t as f32).collect(),
            alphas,
            prediction_type: config.prediction_type,
            clip: config
                .clip_sample
                .then_some(config.clip_sample_range as f32),
            next: 0,
        })
    }
}

impl Ddim {
    /// `(ᾱ_t, ᾱ_prev)` of each call, `ᾱ_prev` at `t − T/n` (`final_alpha_cumprod` below
    /// 0): what DDPM inversion's formulas read (inbarhub's `get_variance`, `reverse_step`).
    pub fn alphas(&self) -> &[(f32, f32)] {
        &self.alphas
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn begin_at(&mut self, index: usize) -> Result<()> {
        assert_eq!(self.next, 0, "DDIM: begin_at after a step");
        self.next = index;
        Ok(())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], index: usize) -> Vec<f32> {
        super::add_noise_alpha(original, noise, self.alphas[index].0)
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Vec<f32> {
        check_lengths(model_output, sample, noise);
        assert_eq!(
            step_index, self.next,
            "DDIM: step {step_index} called, but call {} is next",
            self.next
        );
        let (a_t, a_prev) = self.alphas[step_index];
        self.next += 1;

        let b_t = 1.0 - a_t;
        let (sqrt_a_t, sqrt_b_t) = (a_t.sqrt(), b_t.sqrt());
        // η·σ_t with η = 0 (kept as an expression: a NaN variance stays NaN, as in torch).
        let eta = 0.0f32;
        let variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev);
        let std_dev_t = eta * variance.sqrt();
        let dir_coeff = (1.0 - a_prev - std_dev_t * std_dev_t).sqrt();
        let sqrt_a_prev = a_prev.sqrt();

        sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| {
                // 3. predicted x₀ and ε
                let (mut x0, eps) = match self.prediction_type {
                    PredictionType::Epsilon => ((x - sqrt_b_t * m) / sqrt_a_t, m),
                    PredictionType::Sample => (m, (x - sqrt_a_t * m) / sqrt_b_t),
                    PredictionType::VPrediction => {
                        (sqrt_a_t * x - sqrt_b_t * m, sqrt_a_t * m + sqrt_b_t * x)
                    }
                };
                // 4. clip x₀ (torch.clamp; NaN passes through)
                if let Some(r) = self.clip {
                    x0 = clamp_like_torch(x0, -r, r);
                }
                // 6.-7. x_prev = √ᾱ_prev·x₀ + √(1−ᾱ_prev−σ²)·ε
                sqrt_a_prev * x0 + dir_coeff * eps
            })
            .collect()
    }
}

/// `torch.clamp(x, lo, hi)`: `min(max(x, lo), hi)` with NaN propagated.
fn clamp_like_torch(x: f32, lo: f32, hi: f32) -> f32 {
    if x.is_nan() { x } else { x.max(lo).min(hi) }
}
