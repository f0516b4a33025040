//! PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models"), diffusers'
//! `PNDMScheduler` (scheduling_pndm.py): Runge-Kutta warm-up steps then the linear
//! multistep method PLMS. Stable Diffusion and RoentGen skip the Runge-Kutta part
//! (`skip_prk_steps`) and start PLMS with a second-order Heun-like step, which is why
//! one timestep is visited twice: N steps take N + 1 UNet calls.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{alpha_at, np_linspace};
use super::{Scheduler, SchedulerKind, alphas_cumprod, check_lengths, unsupported};
use crate::error::Result;

/// Where one call steps from and to, fixed by `set_timesteps` and the call counter.
#[derive(Clone, Copy, Debug)]
struct Hop {
    /// ᾱ at the timestep the update starts from.
    alpha_prod_t: f32,
    /// ᾱ at the timestep it lands on (`final_alpha_cumprod` below 0).
    alpha_prod_t_prev: f32,
}

#[derive(Clone, Debug)]
pub struct Pndm {
    timesteps: Vec<f32>,
    hops: Vec<Hop>,
    /// Calls that are Runge-Kutta steps (0 with `skip_prk_steps`).
    prk_calls: usize,
    prediction_type: PredictionType,
    /// The first call run ([`Scheduler::begin_at`]); `counter` counts from it.
    begin: usize,
    ratio: i64,
    final_alpha_cumprod: f32,
    ac: Vec<f32>,
    // State, as diffusers keeps it.
    counter: usize,
    /// Past model outputs (ε_θ) the multistep formulas combine, newest last.
    ets: Vec<Vec<f32>>,
    /// Runge-Kutta: the weighted sum of this step's four model outputs so far.
    cur_model_output: Option<Vec<f32>>,
    /// The sample the current (Runge-Kutta or first PLMS) step started from.
    cur_sample: Option<Vec<f32>>,
}

/// The (timestep, prev_timestep) each call's update uses, exactly as step_prk /
/// step_plms derive them from the counter and the timestep passed in (`calls` are the
/// timesteps run, in order, the counter starting at 0 on the first).
fn plan_hops(
    calls: &[i64],
    prk: &[i64],
    ratio: i64,
    ac: &[f32],
    final_alpha_cumprod: f32,
) -> Result<Vec<Hop>> {
    let mut hops = Vec::with_capacity(calls.len());
    for (counter, &t_in) in calls.iter().enumerate() {
        let (t, prev) = if counter < prk.len() {
            let diff = if counter % 2 == 1 { 0 } else { ratio / 2 };
            (prk[counter / 4 * 4], t_in - diff)
        } else if counter == 1 {
            (t_in + ratio, t_in)
        } else {
            (t_in, t_in - ratio)
        };
        let what = format!("PNDM call {counter}");
        let alpha_prod_t = alpha_at(ac, t, &what)?;
        let alpha_prod_t_prev = if prev >= 0 {
            alpha_at(ac, prev, &what)?
        } else {
            final_alpha_cumprod
        };
        hops.push(Hop {
            alpha_prod_t,
            alpha_prod_t_prev,
        });
    }
    Ok(hops)
}

impl Pndm {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let kind = SchedulerKind::Pndm;
        if config.prediction_type == PredictionType::Sample {
            return Err(unsupported(kind, "prediction_type \"sample\"".into()));
        }
        let n = num_inference_steps;
        let t_train = config.num_train_timesteps as i64;
        let ac = alphas_cumprod(kind, config);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            ac[0]
        };

        // set_timesteps: the ascending base grid `_timesteps`.
        let base: Vec<i64> = match config.timestep_spacing.unwrap_or(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .map(|x| x.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / n as i64;
                (0..n as i64)
                    .map(|i| i * ratio + config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t_train as f64 / n as f64;
                let mut t: Vec<i64> = super::schedule::np_arange(t_train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64 - 1)
                    .collect();
                t.reverse();
                t
            }
        };

        let (prk, plms): (Vec<i64>, Vec<i64>) = if config.skip_prk_steps {
            // concat(_t[:-1], _t[-2:-1], _t[-1:])[::-1]
            let mut p = base[..base.len() - 1].to_vec();
            if base.len() >= 2 {
                p.push(base[base.len() - 2]);
            }
            p.push(base[base.len() - 1]);
            p.reverse();
            (vec![], p)
        } else {
            if n < 4 {
                return Err(unsupported(
                    kind,
                    format!(
                        "{n} steps with Runge-Kutta warm-up (`skip_prk_steps` false needs at least 4)"
                    ),
                ));
            }
            // np.array(_t[-4:]).repeat(2) + np.tile([0, T // n // 2], 4), then
            // [:-1].repeat(2)[1:-1][::-1]
            let half = t_train / n as i64 / 2;
            let r: Vec<i64> = base[base.len() - 4..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            let mut prk: Vec<i64> = r[..r.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            prk = prk[1..prk.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        let calls: Vec<i64> = prk.iter().chain(&plms).copied().collect();

        let ratio = t_train / n as i64;
        let hops = plan_hops(&calls, &prk, ratio, &ac, final_alpha_cumprod)?;

        Ok(Pndm {
            timesteps: calls.iter().map(|&t| t as f32).collect(),
            hops,
            begin: 0,
            ratio,
            final_alpha_cumprod,
            ac,
            prk_calls: prk.len(),
            prediction_type: config.prediction_type,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        })
    }

    /// `step_prk`: four calls per Runge-Kutta step, weights 1/6, 1/3, 1/3, 1/6.
    fn step_prk(&mut self, model_output: &[f32], sample: &[f32]) -> Vec<f32> {
        let phase = self.counter % 4;
        // Python's 1/6 and 1/3 (float64), rounded to float32 when they meet the tensor.
        let weight = (if phase == 0 || phase == 3 {
            1.0f64 / 6.0
        } else {
            1.0 / 3.0
        }) as f32;
        let weighted = |acc: Option<Vec<f32>>| -> Vec<f32> {
            // cur_model_output += w * model_output (starting from the integer 0)
            match acc {
                None => model_output.iter().map(|&m| weight * m).collect(),
                Some(mut acc) => {
                    for (a, &m) in acc.iter_mut().zip(model_output) {
                        *a += weight * m;
                    }
                    acc
                }
            }
        };
        let model_output: Vec<f32> = match phase {
            0 => {
                self.cur_model_output = Some(weighted(self.cur_model_output.take()));
                self.ets.push(model_output.to_vec());
                self.cur_sample = Some(sample.to_vec());
                model_output.to_vec()
            }
            1 | 2 => {
                self.cur_model_output = Some(weighted(self.cur_model_output.take()));
                model_output.to_vec()
            }
            _ => weighted(self.cur_model_output.take()),
        };
        let cur_sample = self.cur_sample.as_deref().unwrap_or(sample);
        self.prev_sample(cur_sample, &model_output)
    }

    /// `step_plms`: Adams-Bashforth combinations of up to four past model outputs.
    fn step_plms(&mut self, model_output: &[f32], sample: &[f32]) -> Vec<f32> {
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.to_vec());
        }
        let e = &self.ets;
        let k = e.len();
        let mut sample = sample.to_vec();
        let combined: Vec<f32> = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.to_vec()
        } else if k == 1 && self.counter == 1 {
            // The repeated timestep: redo the first step from its start with the mean of
            // the two model outputs.
            sample = self
                .cur_sample
                .take()
                .expect("PLMS call 0 stored its sample");
            model_output
                .iter()
                .zip(&e[0])
                .map(|(&m, &e0)| (m + e0) / 2.0)
                .collect()
        } else if k == 2 {
            (0..sample.len())
                .map(|i| (3.0 * e[1][i] - e[0][i]) / 2.0)
                .collect()
        } else if k == 3 {
            (0..sample.len())
                .map(|i| (23.0 * e[2][i] - 16.0 * e[1][i] + 5.0 * e[0][i]) / 12.0)
                .collect()
        } else {
            let c = (1.0f64 / 24.0) as f32;
            (0..sample.len())
                .map(|i| c * (55.0 * e[3][i] - 59.0 * e[2][i] + 37.0 * e[1][i] - 9.0 * e[0][i]))
                .collect()
        };
        self.prev_sample(&sample, &combined)
    }

    /// `_get_prev_sample`: formula (9) of the PNDM paper, x_{t−δ} from x_t and ε.
    fn prev_sample(&self, sample: &[f32], model_output: &[f32]) -> Vec<f32> {
        let Hop {
            alpha_prod_t: a_t,
            alpha_prod_t_prev: a_prev,
        } = self.hops[self.counter];
        let beta_prod_t = 1.0 - a_t;
        let beta_prod_t_prev = 1.0 - a_prev;
        let (sqrt_a_t, sqrt_b_t) = (a_t.sqrt(), beta_prod_t.sqrt());

        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * beta_prod_t_prev.sqrt() + (a_t * beta_prod_t * a_prev).sqrt();
        let diff = a_prev - a_t;
        sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| {
                let eps = match self.prediction_type {
                    // v → ε: √ᾱ·v + √(1−ᾱ)·x
                    PredictionType::VPrediction => sqrt_a_t * m + sqrt_b_t * x,
                    _ => m,
                };
                sample_coeff * x - diff * eps / denom
            })
            .collect()
    }
}

impl Scheduler for Pndm {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
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
            step_index,
            self.begin + self.counter,
            "PNDM: step {step_index} called, but call {} is next",
            self.begin + self.counter
        );
        assert!(
            self.counter < self.hops.len(),
            "PNDM: step {step_index} is past the last call"
        );
        let out = if self.counter < self.prk_calls {
            self.step_prk(model_output, sample)
        } else {
            self.step_plms(model_output, sample)
        };
        self.counter += 1;
        out
    }

    /// diffusers' PNDM has no `set_begin_index`: image-to-image passes it
    /// `timesteps[t_start:]` and its counter starts at 0 there, so the Heun-like second
    /// call (counter 1) lands on the second timestep run, not on the repeated one. The
    /// hops are planned again for the calls that remain, the same way.
    fn begin_at(&mut self, index: usize) -> Result<()> {
        assert_eq!(self.counter, 0, "PNDM: begin_at after a step");
        if index == 0 {
            return Ok(());
        }
        if self.prk_calls > 0 {
            return Err(unsupported(
                SchedulerKind::Pndm,
                "image-to-image with Runge-Kutta warm-up steps (`skip_prk_steps` false)".into(),
            ));
        }
        assert!(
            index < self.timesteps.len(),
            "PNDM: begin_at({index}) past the end"
        );
        let calls: Vec<i64> = self.timesteps[index..].iter().map(|&t| t as i64).collect();
        self.hops = plan_hops(&calls, &[], self.ratio, &self.ac, self.final_alpha_cumprod)?;
        self.begin = index;
        Ok(())
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], index: usize) -> Vec<f32> {
        let t = self.timesteps[index] as usize;
        super::add_noise_alpha(original, noise, self.ac[t])
    }
}
