//! DPM-Solver multistep (Lu et al. 2022, "DPM-Solver++"), diffusers'
//! `DPMSolverMultistepScheduler` (scheduling_dpmsolver_multistep.py). With diffusers'
//! defaults, which an SD/RoentGen config leaves in place, this is DPM-Solver++ 2M:
//! `algorithm_type` "dpmsolver++", `solver_order` 2, `solver_type` "midpoint",
//! `lower_order_final`, `final_sigmas_type` "zero", sigmas interpolated from the
//! training schedule (no Karras sigmas).
//!
//! Also implemented, because they cost a few lines each: `solver_order` 1 and 3,
//! `solver_type` "heun", `algorithm_type` "dpmsolver", `final_sigmas_type` "sigma_min",
//! `euler_at_final`, `lambda_min_clipped`, prediction types ε, v and x₀. Not
//! implemented (an error names them): the SDE variants, Karras / exponential / beta /
//! λ-uniform / flow sigmas, dynamic thresholding and learned variance.

use super::config::{
    AlgorithmType, FinalSigmasType, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
};
use super::schedule::{np_arange, np_interp_grid, np_linspace, sigmas_from_alphas_cumprod};
use super::{Scheduler, SchedulerKind, alphas_cumprod, check_lengths, unsupported};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f32>,
    /// One σ per call plus the final one (float32, as diffusers stores them).
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    algorithm: AlgorithmType,
    solver_type: SolverType,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    // State.
    /// The last `solver_order` converted model outputs, oldest first.
    model_outputs: Vec<Option<Vec<f32>>>,
    lower_order_nums: usize,
    next: usize,
}

/// α_t = 1/√(σ²+1), σ_t = σ·α_t (`_sigma_to_alpha_sigma_t`, float32).
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha_t, sigma * alpha_t)
}

/// λ = log α − log σ (float32; +∞ at σ = 0, as in torch).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl DpmSolverMultistep {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let kind = SchedulerKind::DpmSolverMultistep;
        let no = |what: &str| Err(unsupported(kind, what.to_owned()));
        match config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::DpmSolver => {}
            AlgorithmType::SdeDpmSolverPlusPlus | AlgorithmType::SdeDpmSolver => {
                return no("the SDE variants (`algorithm_type` sde-dpmsolver, sde-dpmsolver++)");
            }
        }
        if config.use_karras_sigmas
            || config.use_exponential_sigmas
            || config.use_beta_sigmas
            || config.use_lu_lambdas
            || config.use_flow_sigmas
            || config.use_dynamic_shifting
        {
            return no(
                "Karras, exponential, beta, λ-uniform or flow sigmas (`use_*_sigmas`, `use_lu_lambdas`, `use_dynamic_shifting`)",
            );
        }
        if config.thresholding {
            return no("dynamic thresholding (`thresholding`)");
        }
        if matches!(
            config.variance_type.as_deref(),
            Some("learned" | "learned_range")
        ) {
            return no("a learned variance (`variance_type`)");
        }
        if !(1..=3).contains(&config.solver_order) {
            return Err(Error::Config {
                file: "scheduler/scheduler_config.json".into(),
                message: format!(
                    "`solver_order` is {}; DPM-Solver has orders 1, 2 and 3",
                    config.solver_order
                ),
            });
        }
        if config.algorithm_type == AlgorithmType::DpmSolver
            && config.final_sigmas_type == FinalSigmasType::Zero
        {
            // diffusers raises the same ValueError.
            return Err(Error::Config {
                file: "scheduler/scheduler_config.json".into(),
                message: "`final_sigmas_type` \"zero\" needs `algorithm_type` \"dpmsolver++\"; use \"sigma_min\"".into(),
            });
        }

        let n = num_inference_steps;
        let t_train = config.num_train_timesteps;
        let ac = alphas_cumprod(kind, config);

        // The last usable training step: λ_t = log √ᾱ − log √(1−ᾱ) clipped below at
        // `lambda_min_clipped` (torch.searchsorted on the flipped λ, side "left").
        let clipped_idx = if config.lambda_min_clipped == f64::NEG_INFINITY {
            0
        } else {
            let clip = config.lambda_min_clipped;
            ac.iter()
                .rev()
                .map(|&a| (a.sqrt().ln() - (1.0 - a).sqrt().ln()) as f64)
                .take_while(|&l| l < clip)
                .count()
        };
        let last_timestep = (t_train - clipped_idx) as i64;

        let timesteps: Vec<i64> = match config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace)
        {
            TimestepSpacing::Linspace => {
                let mut t: Vec<i64> = np_linspace(0.0, (last_timestep - 1) as f64, n + 1)
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64)
                    .collect();
                t.reverse();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = last_timestep / (n as i64 + 1);
                (1..=n as i64)
                    .rev()
                    .map(|i| i * ratio + config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t_train as f64 / n as f64;
                np_arange(last_timestep as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64 - 1)
                    .collect()
            }
        };

        // sigmas = np.interp(timesteps, arange(T), σ_train): integer timesteps hit the
        // grid, so each is the float32 training σ itself; numpy clamps a timestep past
        // the table (e.g. "leading" with `steps_offset` at 999 steps gives t = 1000) to
        // its last σ, and so does this.
        let train_sigmas = sigmas_from_alphas_cumprod(&ac);
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| np_interp_grid(t as f64, &train_sigmas) as f32)
            .collect();
        // Two calls at the same σ make a zero step h, and the next multistep update
        // divides by it: diffusers returns NaN latents. Only "leading" spacing at 999 of
        // 1000 steps gets there (t = 1000 is clamped onto σ(999)); refuse it instead.
        if let Some(i) = sigmas.windows(2).position(|w| w[0] == w[1]) {
            return Err(Error::Input(format!(
                "DPM-Solver with {n} steps visits σ({}) twice (calls {i} and {}), which makes \
                 its update divide by zero; use fewer steps or `timestep_spacing` \"trailing\"",
                timesteps[i],
                i + 1
            )));
        }
        sigmas.push(match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            // ((1 − ᾱ_0)/ᾱ_0) ** 0.5 on a float32 tensor element
            FinalSigmasType::SigmaMin => train_sigmas[0],
        });

        Ok(DpmSolverMultistep {
            timesteps: timesteps.iter().map(|&t| t as f32).collect(),
            sigmas,
            prediction_type: config.prediction_type,
            algorithm: config.algorithm_type,
            solver_type: config.solver_type,
            solver_order: config.solver_order,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigma_zero: config.final_sigmas_type == FinalSigmasType::Zero,
            model_outputs: vec![None; config.solver_order],
            lower_order_nums: 0,
            next: 0,
        })
    }

    /// `convert_model_output`: x₀ for DPM-Solver++, ε for DPM-Solver.
    fn convert_model_output(&self, model_output: &[f32], sample: &[f32], i: usize) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i]);
        let pairs = sample.iter().zip(model_output);
        match (self.algorithm, self.prediction_type) {
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::Epsilon) => {
                pairs.map(|(&x, &m)| (x - sigma_t * m) / alpha_t).collect()
            }
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::Sample) => model_output.to_vec(),
            (AlgorithmType::DpmSolverPlusPlus, PredictionType::VPrediction) => {
                pairs.map(|(&x, &m)| alpha_t * x - sigma_t * m).collect()
            }
            (_, PredictionType::Epsilon) => model_output.to_vec(),
            (_, PredictionType::Sample) => {
                pairs.map(|(&x, &m)| (x - alpha_t * m) / sigma_t).collect()
            }
            (_, PredictionType::VPrediction) => {
                pairs.map(|(&x, &m)| alpha_t * m + sigma_t * x).collect()
            }
        }
    }

    /// `dpm_solver_first_order_update` (DDIM in λ).
    fn first_order(&self, m0: &[f32], sample: &[f32], i: usize) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        let pairs = sample.iter().zip(m0);
        if self.algorithm == AlgorithmType::DpmSolverPlusPlus {
            let a = sigma_t / sigma_s;
            let b = alpha_t * ((-h).exp() - 1.0);
            pairs.map(|(&x, &m)| a * x - b * m).collect()
        } else {
            let a = alpha_t / alpha_s;
            let b = sigma_t * (h.exp() - 1.0);
            pairs.map(|(&x, &m)| a * x - b * m).collect()
        }
    }

    /// `multistep_dpm_solver_second_order_update`.
    fn second_order(&self, sample: &[f32], i: usize) -> Vec<f32> {
        let k = self.model_outputs.len();
        let m0 = self.model_outputs[k - 1]
            .as_deref()
            .expect("model output of this call");
        let m1 = self.model_outputs[k - 2]
            .as_deref()
            .expect("model output of the last call");
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let inv_r0 = 1.0 / r0;
        // x_t = a·x − b·D0 ∓ c·D1, with D0 = m0 and D1 = (1/r0)·(m0 − m1).
        let (a, b, c, minus_c) = match (self.algorithm, self.solver_type) {
            (AlgorithmType::DpmSolverPlusPlus, SolverType::Midpoint) => {
                let b = alpha_t * ((-h).exp() - 1.0);
                (sigma_t / sigma_s0, b, 0.5 * b, true)
            }
            (AlgorithmType::DpmSolverPlusPlus, SolverType::Heun) => (
                sigma_t / sigma_s0,
                alpha_t * ((-h).exp() - 1.0),
                alpha_t * (((-h).exp() - 1.0) / h + 1.0),
                false,
            ),
            (_, SolverType::Midpoint) => {
                let b = sigma_t * (h.exp() - 1.0);
                (alpha_t / alpha_s0, b, 0.5 * b, true)
            }
            (_, SolverType::Heun) => (
                alpha_t / alpha_s0,
                sigma_t * (h.exp() - 1.0),
                sigma_t * ((h.exp() - 1.0) / h - 1.0),
                true,
            ),
        };
        (0..sample.len())
            .map(|j| {
                let d1 = inv_r0 * (m0[j] - m1[j]);
                let y = a * sample[j] - b * m0[j];
                if minus_c { y - c * d1 } else { y + c * d1 }
            })
            .collect()
    }

    /// `multistep_dpm_solver_third_order_update`.
    fn third_order(&self, sample: &[f32], i: usize) -> Vec<f32> {
        let k = self.model_outputs.len();
        let m0 = self.model_outputs[k - 1]
            .as_deref()
            .expect("model output of this call");
        let m1 = self.model_outputs[k - 2]
            .as_deref()
            .expect("model output of the last call");
        let m2 = self.model_outputs[k - 3]
            .as_deref()
            .expect("model output of the call before");
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[i - 2]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let lambda_s2 = lambda(alpha_s2, sigma_s2);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let h_1 = lambda_s1 - lambda_s2;
        let (r0, r1) = (h_0 / h, h_1 / h);
        let (inv_r0, inv_r1) = (1.0 / r0, 1.0 / r1);
        let w = r0 / (r0 + r1);
        let inv_r01 = 1.0 / (r0 + r1);
        let e = (-h).exp();
        let eh = h.exp();
        let pp = self.algorithm == AlgorithmType::DpmSolverPlusPlus;
        let (a, b, c, d) = if pp {
            (
                sigma_t / sigma_s0,
                alpha_t * (e - 1.0),
                alpha_t * ((e - 1.0) / h + 1.0),
                alpha_t * ((e - 1.0 + h) / (h * h) - 0.5),
            )
        } else {
            (
                alpha_t / alpha_s0,
                sigma_t * (eh - 1.0),
                sigma_t * ((eh - 1.0) / h - 1.0),
                sigma_t * ((eh - 1.0 - h) / (h * h) - 0.5),
            )
        };
        (0..sample.len())
            .map(|j| {
                let d1_0 = inv_r0 * (m0[j] - m1[j]);
                let d1_1 = inv_r1 * (m1[j] - m2[j]);
                let d1 = d1_0 + w * (d1_0 - d1_1);
                let d2 = inv_r01 * (d1_0 - d1_1);
                if pp {
                    a * sample[j] - b * m0[j] + c * d1 - d * d2
                } else {
                    a * sample[j] - b * m0[j] - c * d1 - d * d2
                }
            })
            .collect()
    }
}

impl Scheduler for DpmSolverMultistep {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn begin_at(&mut self, index: usize) -> Result<()> {
        assert_eq!(self.next, 0, "DPM-Solver: begin_at after a step");
        self.next = index;
        Ok(())
    }

    /// α_t·x + σ_t·ε with (α_t, σ_t) from the call's σ (`_sigma_to_alpha_sigma_t`).
    fn add_noise(&self, original: &[f32], noise: &[f32], index: usize) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[index]);
        original
            .iter()
            .zip(noise)
            .map(|(&x, &n)| alpha_t * x + sigma_t * n)
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
            "DPM-Solver: step {step_index} called, but call {} is next",
            self.next
        );
        let i = step_index;
        let n = self.timesteps.len();
        assert!(i < n, "DPM-Solver: step {i} is past the last call");

        let lower_order_final = i == n - 1
            && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_sigma_zero);
        let lower_order_second = i + 2 == n && self.lower_order_final && n < 15;

        let converted = self.convert_model_output(model_output, sample, i);
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order ≥ 1") = Some(converted);

        let out = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            let m0 = self
                .model_outputs
                .last()
                .and_then(|m| m.as_deref())
                .expect("this call's output");
            self.first_order(m0, sample, i)
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(sample, i)
        } else {
            self.third_order(sample, i)
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.next += 1;
        out
    }
}
