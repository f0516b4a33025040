//! Euler ancestral sampling (Karras et al. 2022's Euler step plus k-diffusion's
//! ancestral noise), diffusers' `EulerAncestralDiscreteScheduler`
//! (scheduling_euler_ancestral_discrete.py).
//!
//! It works in σ-space: latents start at σ_max·ε (`init_noise_sigma` ≈ 14.6 for SD's
//! schedule), the UNet sees x/√(σ²+1), and every step adds fresh noise of standard
//! deviation σ_up, which the caller draws (see [`Scheduler::needs_noise`]).

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{np_arange, np_interp_grid, np_linspace, sigmas_from_alphas_cumprod};
use super::{Scheduler, SchedulerKind, alphas_cumprod, check_lengths, unsupported};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct EulerAncestral {
    timesteps: Vec<f32>,
    /// One σ per call plus the final 0 (float32).
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    prediction_type: PredictionType,
    next: usize,
}

impl EulerAncestral {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let kind = SchedulerKind::EulerAncestral;
        if config.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError in `step`.
            return Err(unsupported(kind, "prediction_type \"sample\"".into()));
        }
        let n = num_inference_steps;
        let t_train = config.num_train_timesteps;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);

        // set_timesteps: float32 timesteps (possibly fractional with "linspace").
        let timesteps: Vec<f32> = match spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|x| x as f32)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio) as f32 + config.steps_offset as f32)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                np_arange(t_train as f64, 0.0, -(t_train as f64 / n as f64))
                    .into_iter()
                    .map(|x| x.round_ties_even() as f32 - 1.0)
                    .collect()
            }
        };

        // σ at each timestep, linearly interpolated (float64) in the training σ table,
        // then float32; a final 0.
        let ac = alphas_cumprod(kind, config);
        let train_sigmas = sigmas_from_alphas_cumprod(&ac);
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| np_interp_grid(t as f64, &train_sigmas) as f32)
            .collect();
        sigmas.push(0.0);

        // init_noise_sigma: σ_max for "linspace"/"trailing", √(σ_max²+1) for "leading".
        let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        });
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };

        Ok(EulerAncestral {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction_type: config.prediction_type,
            next: 0,
        })
    }
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &mut [f32], step_index: usize) {
        let sigma = self.sigmas[step_index];
        let d = (sigma * sigma + 1.0).sqrt();
        for x in sample {
            *x /= d;
        }
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn begin_at(&mut self, index: usize) -> Result<()> {
        assert_eq!(self.next, 0, "Euler ancestral: begin_at after a step");
        self.next = index;
        Ok(())
    }

    /// x + σ·ε (diffusers: `original_samples + noise * sigma`).
    fn add_noise(&self, original: &[f32], noise: &[f32], index: usize) -> Vec<f32> {
        let sigma = self.sigmas[index];
        original
            .iter()
            .zip(noise)
            .map(|(&x, &n)| x + n * sigma)
            .collect()
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
            "Euler ancestral: step {step_index} called, but call {} is next",
            self.next
        );
        let noise = noise.expect("Euler ancestral: `step` needs noise (see `needs_noise`)");
        let i = step_index;
        self.next += 1;

        let sigma = self.sigmas[i];
        let sigma_to = self.sigmas[i + 1];
        let s2 = sigma * sigma;
        let t2 = sigma_to * sigma_to;
        // σ_up = √(σ_to²·(σ_from² − σ_to²)/σ_from²), σ_down = √(σ_to² − σ_up²)
        let sigma_up = (t2 * (s2 - t2) / s2).sqrt();
        let sigma_down = (t2 - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        // v-prediction coefficients: x₀ = v·(−σ/√(σ²+1)) + x/(σ²+1)
        let v_coeff = -sigma / (s2 + 1.0).sqrt();
        let v_denom = s2 + 1.0;

        (0..sample.len())
            .map(|j| {
                let x = sample[j];
                let m = model_output[j];
                // 1. predicted x₀
                let x0 = match self.prediction_type {
                    PredictionType::VPrediction => m * v_coeff + x / v_denom,
                    _ => x - sigma * m,
                };
                // 2. Euler step to σ_down, then ancestral noise up to σ_to
                let derivative = (x - x0) / sigma;
                let prev = x + derivative * dt;
                prev + noise[j] * sigma_up
            })
            .collect()
    }
}
