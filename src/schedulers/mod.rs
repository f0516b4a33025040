//! Diffusion schedulers: the denoising loop's arithmetic between two UNet calls.
//!
//! Four diffusers 0.42.1 schedulers, step for step: [`Pndm`] (PLMS, RoentGen's and SD
//! 1.x's default), [`Ddim`] (η = 0), [`DpmSolverMultistep`] (DPM-Solver++ 2M) and
//! [`EulerAncestral`]. Each is built from the checkpoint's
//! `scheduler/scheduler_config.json` ([`SchedulerConfig`]) the way
//! `<Class>.from_config(pipe.scheduler.config)` builds it, so a pipeline can switch
//! schedulers on any checkpoint exactly as a diffusers user does.
//!
//! The pipeline drives every scheduler the same way (diffusers' `StableDiffusionPipeline`
//! loop, with `i` the call index instead of the timestep value):
//!
//! ```text
//! latents = randn(...) * s.init_noise_sigma()
//! for (i, t) in s.timesteps().enumerate():
//!     input = s.scale_model_input(latents, i)          // then duplicate for guidance
//!     eps   = guided UNet(input, t)
//!     noise = s.needs_noise().then(|| generator.randn(latents.len()))
//!     latents = s.step(eps, i, latents, noise)
//! ```
//!
//! Precision: latents are small (4×64×64 per image), so everything runs on the CPU in f32,
//! mirroring diffusers' float32 tensor maths operation by operation (same order, no fused
//! multiply-adds), and its float64 numpy maths for timesteps and sigmas (see [`schedule`]).
//! Against the goldens of tests/schedulers.rs every step agrees to better than 1e-6
//! relative (the rest is torch's CPU `sqrt`, which is not correctly rounded, and libm's
//! `logf`/`expf`).
//!
//! All ops are elementwise, so `sample` may hold any number of images back to back.

mod config;
mod ddim;
mod dpm_solver;
mod euler_ancestral;
mod pndm;
pub mod schedule;

use std::fmt;
use std::str::FromStr;

pub use config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, MAX_TRAIN_TIMESTEPS, PredictionType,
    SchedulerConfig, SolverType, TimestepSpacing,
};
pub use ddim::Ddim;
pub use dpm_solver::DpmSolverMultistep;
pub use euler_ancestral::EulerAncestral;
pub use pndm::Pndm;

use crate::error::{Error, Result};

/// The schedulers this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `PNDMScheduler` (PLMS when the config says `skip_prk_steps`).
    Pndm,
    /// `DDIMScheduler` with η = 0.
    Ddim,
    /// `DPMSolverMultistepScheduler`; with diffusers' defaults this is DPM-Solver++ 2M.
    DpmSolverMultistep,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::EulerAncestral,
    ];

    /// The short name [`FromStr`] reads: `pndm`, `ddim`, `dpm++2m`, `euler-a`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
            SchedulerKind::EulerAncestral => "euler-a",
        }
    }

    /// The diffusers class.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
        }
    }

    /// The kind of a config's `_class_name`, if this crate implements it: the scheduler a
    /// checkpoint was shipped with.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == k || kind.class_name().eq_ignore_ascii_case(&k))
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown scheduler `{s}`; choose one of pndm, ddim, dpm++2m, euler-a"
                ))
            })
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scheduler, set up for a number of inference steps.
///
/// `step_index` counts UNet calls from 0; calls must come in order, each exactly once
/// (multistep schedulers keep history).
pub trait Scheduler: Send {
    /// The timestep of each UNet call, in order: what the UNet's time embedding gets.
    /// PNDM repeats one (75 steps give 76 calls); Euler ancestral's may be fractional.
    fn timesteps(&self) -> &[f32];

    /// The standard deviation of the initial noise: latents start as `randn · this`.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// Scales the UNet input of call `step_index` in place (Euler ancestral divides by
    /// √(σ²+1); the others leave it unchanged).
    fn scale_model_input(&self, _sample: &mut [f32], _step_index: usize) {}

    /// Whether [`Scheduler::step`] needs fresh standard-normal noise (Euler ancestral).
    /// diffusers draws it inside `step` from the pipeline's generator, after the UNet
    /// call, with the latents' shape: draw it there from the same generator.
    fn needs_noise(&self) -> bool {
        false
    }

    /// The sample before call `step_index + 1`, from the (guided) model output of call
    /// `step_index` and the current `sample`.
    ///
    /// # Panics
    /// If calls come out of order, if the lengths of `model_output`, `sample` (and
    /// `noise`) differ, or if noise is missing where [`Scheduler::needs_noise`] says it
    /// is needed: all programming errors of the caller, not bad input.
    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Vec<f32>;

    /// Starts the schedule at call `index` instead of 0 (image-to-image: diffusers'
    /// `timesteps[t_start * order:]` and `set_begin_index`); the next `step` is then
    /// `step_index == index`. Called once, before any step.
    fn begin_at(&mut self, index: usize) -> Result<()>;

    /// `original` noised to the level of call `index` with `noise` (diffusers'
    /// `add_noise` at `timesteps[index]`): √ᾱ_t·x + √(1-ᾱ_t)·ε for PNDM and DDIM,
    /// x + σ·ε for Euler ancestral, α_t·x + σ_t·ε for DPM-Solver.
    fn add_noise(&self, original: &[f32], noise: &[f32], index: usize) -> Vec<f32>;
}

/// √ᾱ·x + √(1-ᾱ)·ε in float32, as diffusers' DDPM-style `add_noise` computes it.
pub(crate) fn add_noise_alpha(original: &[f32], noise: &[f32], alpha_prod: f32) -> Vec<f32> {
    let (a, b) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    original
        .iter()
        .zip(noise)
        .map(|(&x, &n)| a * x + b * n)
        .collect()
}

/// Builds scheduler `kind` from a checkpoint's scheduler config for
/// `num_inference_steps` denoising steps (diffusers' `from_config` + `set_timesteps`).
///
/// Errors: zero steps, more steps than training steps, and config options diffusers has
/// but this crate does not implement (each named in the message).
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    config.check("scheduler/scheduler_config.json")?;
    let t = config.num_train_timesteps;
    if num_inference_steps == 0 || num_inference_steps > t {
        return Err(Error::Input(format!(
            "{num_inference_steps} inference steps: choose between 1 and {t} (the model's training steps)"
        )));
    }
    Ok(match kind {
        SchedulerKind::Pndm => Box::new(Pndm::new(config, num_inference_steps)?),
        SchedulerKind::Ddim => Box::new(Ddim::new(config, num_inference_steps)?),
        SchedulerKind::DpmSolverMultistep => {
            Box::new(DpmSolverMultistep::new(config, num_inference_steps)?)
        }
        SchedulerKind::EulerAncestral => {
            Box::new(EulerAncestral::new(config, num_inference_steps)?)
        }
    })
}

/// ᾱ_t (`alphas_cumprod`, float32) for every training step, as scheduler `kind` builds it
/// from `config`: the betas, zero-terminal-SNR rescaling where the class supports it,
/// and for DPM-Solver and Euler ancestral the last ᾱ pinned to 2⁻²⁴ under that rescaling
/// (so that σ stays finite), as diffusers does.
pub fn alphas_cumprod(kind: SchedulerKind, config: &SchedulerConfig) -> Vec<f32> {
    let mut betas = schedule::betas(config);
    let rescale = config.rescale_betas_zero_snr && kind != SchedulerKind::Pndm;
    if rescale {
        betas = schedule::rescale_zero_terminal_snr(&betas);
    }
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    let mut ac = schedule::torch_cumprod(&alphas);
    if rescale
        && matches!(
            kind,
            SchedulerKind::DpmSolverMultistep | SchedulerKind::EulerAncestral
        )
    {
        let last = ac.len() - 1;
        ac[last] = 2f32.powi(-24);
    }
    ac
}

/// The error for a diffusers option a scheduler here does not implement.
fn unsupported(kind: SchedulerKind, what: String) -> Error {
    Error::Input(format!(
        "the {} scheduler ({}) does not support {what}",
        kind.name(),
        kind.class_name()
    ))
}

/// Panics unless the caller passes equally long slices (see [`Scheduler::step`]).
fn check_lengths(model_output: &[f32], sample: &[f32], noise: Option<&[f32]>) {
    assert_eq!(
        model_output.len(),
        sample.len(),
        "scheduler step: model output and sample differ in length"
    );
    if let Some(n) = noise {
        assert_eq!(
            n.len(),
            sample.len(),
            "scheduler step: noise and sample differ in length"
        );
    }
}
