//! `scheduler/scheduler_config.json`, read the way diffusers' `from_config` reads it.
//!
//! A checkpoint ships the config of *one* scheduler class (RoentGen and SD 1.x: PNDM),
//! and users switch schedulers with `Other.from_config(pipe.scheduler.config)`. diffusers
//! then takes every key the target class knows from the file and gives the others the
//! *target class's* defaults; keys the file left out count as left out even when the
//! source class filled them with its own defaults (diffusers' `_use_default_values`).
//! So here a missing key is `None` where the four classes disagree on its default
//! (`timestep_spacing`, `set_alpha_to_one`), and each scheduler resolves it itself; the
//! other fields default to the value every class that reads them shares. Unknown keys are
//! ignored, as diffusers ignores them.

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// The most training steps a config may give. Every scheduler builds its betas, ᾱ and
/// σ tables for all of them, so `num_train_timesteps` sizes allocations: 10⁸ took a
/// minute and a GB, 4·10⁹ aborted on a failed 16 GB allocation (found probing the
/// scheduler fuzz target: fuzz/regressions/scheduler_config). Checkpoints use 1000.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// How the 1000 training betas are laid out (`beta_schedule`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `torch.linspace(beta_start, beta_end, T)`.
    #[serde(rename = "linear")]
    Linear,
    /// `torch.linspace(beta_start**0.5, beta_end**0.5, T) ** 2` (Stable Diffusion, RoentGen).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (`betas_for_alpha_bar`, max beta 0.999).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the UNet predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise ε (SD 1.x, SD 2.x-base, RoentGen).
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x₀ (SD 2.x 768-px models).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample x₀ (DDIM and DPM-Solver only, as in diffusers).
    #[serde(rename = "sample")]
    Sample,
}

/// How inference timesteps are picked from the training ones (`timestep_spacing`;
/// table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum TimestepSpacing {
    #[serde(rename = "leading")]
    Leading,
    #[serde(rename = "trailing")]
    Trailing,
    #[serde(rename = "linspace")]
    Linspace,
}

/// DPM-Solver's `algorithm_type`. diffusers maps the retired "deis" to "dpmsolver++".
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum AlgorithmType {
    #[serde(rename = "dpmsolver++", alias = "deis")]
    DpmSolverPlusPlus,
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
}

/// DPM-Solver's second-order `solver_type`. diffusers maps UniPC's "logrho", "bh1"
/// and "bh2" to "midpoint".
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum SolverType {
    #[serde(rename = "midpoint", alias = "logrho", alias = "bh1", alias = "bh2")]
    Midpoint,
    #[serde(rename = "heun")]
    Heun,
}

/// DPM-Solver's last sigma (`final_sigmas_type`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum FinalSigmasType {
    /// σ = 0: the last step lands on the predicted x₀.
    #[serde(rename = "zero")]
    Zero,
    /// σ of training step 0.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// The union of the config keys PNDM, DDIM, DPM-Solver multistep and Euler ancestral
/// read, with diffusers 0.42.1's defaults. Keys a scheduler does not read are ignored by
/// it (`skip_prk_steps` means nothing to DDIM, `clip_sample` nothing to PNDM).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The class the checkpoint was saved with (`"PNDMScheduler"` for RoentGen).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; when present they replace `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    /// `None`: the scheduler's own default ("leading" for PNDM and DDIM, "linspace" for
    /// DPM-Solver and Euler ancestral).
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: i64,
    /// `None`: the scheduler's own default (false for PNDM, true for DDIM).
    pub set_alpha_to_one: Option<bool>,
    /// Rescale betas to zero terminal SNR (DDIM, DPM-Solver, Euler ancestral; PNDM has
    /// no such option and ignores it, as diffusers does).
    pub rescale_betas_zero_snr: bool,

    // PNDM
    /// PLMS only (what Stable Diffusion uses) instead of 12 Runge-Kutta warm-up calls.
    pub skip_prk_steps: bool,

    // DDIM
    /// Clamp the predicted x₀ to ±`clip_sample_range`. Defaults to true, as in
    /// diffusers: a PNDM config that does not say `"clip_sample": false` gives a DDIM
    /// that clips (SD 1.4's config says false; RoentGen-style configs written by recent
    /// diffusers do not carry the key at all).
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Dynamic thresholding (pixel-space models); not supported.
    pub thresholding: bool,

    // DPM-Solver multistep
    pub solver_order: usize,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmasType,
    /// Clips the smallest λ = log(α/σ); −∞ (no clipping) by default. diffusers writes
    /// it to JSON as the non-standard literal `-Infinity`, which is accepted here.
    #[serde(deserialize_with = "de_f64_special")]
    pub lambda_min_clipped: f64,
    pub variance_type: Option<String>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub use_dynamic_shifting: bool,
}

impl Default for SchedulerConfig {
    /// diffusers' class defaults (not Stable Diffusion's values).
    fn default() -> Self {
        SchedulerConfig {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            set_alpha_to_one: None,
            rescale_betas_zero_snr: false,
            skip_prk_steps: false,
            clip_sample: true,
            clip_sample_range: 1.0,
            thresholding: false,
            solver_order: 2,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            use_dynamic_shifting: false,
        }
    }
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json`. `file` names it in errors.
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let json = quote_nonfinite_literals(json);
        let err = |message: String| Error::Config {
            file: file.into(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| err(e.to_string()))?;
        if !value.is_object() {
            return Err(err(format!(
                "not a JSON object (a scheduler config is {{\"key\": value, ...}}; this is {})",
                crate::models::config::kind(&value)
            )));
        }
        // parsed again from the text, so that an error keeps its line and column
        let config: SchedulerConfig =
            serde_json::from_str(&json).map_err(|e| err(e.to_string()))?;
        config.check(file)?;
        Ok(config)
    }

    /// The scheduler config of Stable Diffusion v1.x and RoentGen v1: PLMS with
    /// `skip_prk_steps`, `steps_offset` 1, scaled-linear betas 0.00085 → 0.012 over 1000
    /// training steps, `set_alpha_to_one` false, `clip_sample` false, and no
    /// `timestep_spacing` key (so "leading" for PNDM/DDIM, "linspace" for DPM-Solver and
    /// Euler ancestral): CompVis/stable-diffusion-v1-4's `scheduler/scheduler_config.json`
    /// (diffusers 0.7), whose values RoentGen's recipe (MISSION.md) repeats.
    pub fn stable_diffusion_v1() -> Self {
        SchedulerConfig {
            class_name: Some("PNDMScheduler".into()),
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            set_alpha_to_one: Some(false),
            skip_prk_steps: true,
            steps_offset: 1,
            clip_sample: false,
            ..SchedulerConfig::default()
        }
    }

    /// Checks what every scheduler needs, so that a bad file fails when it is read.
    pub fn check(&self, file: &str) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                file: file.into(),
                message,
            })
        };
        let t = self.num_train_timesteps;
        if t < 2 {
            return bad(format!(
                "`num_train_timesteps` is {t}; at least 2 are needed"
            ));
        }
        if t > MAX_TRAIN_TIMESTEPS {
            return bad(format!(
                "`num_train_timesteps` is {t}; at most {MAX_TRAIN_TIMESTEPS} are supported (Stable Diffusion is trained with 1000)"
            ));
        }
        if let Some(b) = &self.trained_betas {
            if b.len() != t {
                return bad(format!(
                    "`trained_betas` has {} values for {t} `num_train_timesteps`",
                    b.len()
                ));
            }
            if let Some(x) = b.iter().find(|&&x| !(0.0..1.0).contains(&x)) {
                return bad(format!("`trained_betas` holds {x}; betas lie in [0, 1)"));
            }
        } else if self.beta_schedule != BetaSchedule::SquaredcosCapV2
            && !((0.0..1.0).contains(&self.beta_start) && (0.0..1.0).contains(&self.beta_end))
        {
            return bad(format!(
                "`beta_start` {} and `beta_end` {} must lie in [0, 1)",
                self.beta_start, self.beta_end
            ));
        }
        Ok(())
    }
}

/// Python's `json` writes ±∞ and NaN as the bare words `Infinity`, `-Infinity` and
/// `NaN`, which JSON (and serde_json) rejects. Outside strings they become the strings
/// `"Infinity"`, `"-Infinity"`, `"NaN"`, which [`de_f64_special`] reads back.
fn quote_nonfinite_literals(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len() + 8);
    let (mut i, mut start, mut in_string, mut escaped) = (0, 0, false, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        let word = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| b[i..].starts_with(w.as_bytes()));
        if let Some(w) = word {
            out.push_str(&json[start..i]);
            out.push('"');
            out.push_str(w);
            out.push('"');
            i += w.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&json[start..]);
    out
}

/// A float given as a JSON number or as one of the strings [`quote_nonfinite_literals`] makes.
fn de_f64_special<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        Num(f64),
        Word(String),
    }
    match F::deserialize(d)? {
        F::Num(x) => Ok(x),
        F::Word(w) => match w.as_str() {
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "Infinity" => Ok(f64::INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => Err(serde::de::Error::custom(format!(
                "expected a number, found \"{w}\""
            ))),
        },
    }
}
