//! The schedulers against diffusers 0.42.1, step for step.
//!
//! Goldens: tests/fixtures/schedulers.safetensors, made by
//! tools/make_scheduler_fixtures.py (diffusers 0.42.1, torch 2.15.0, numpy 2.4.6; see its
//! docstring). Each run builds a scheduler from the RoentGen PNDM config (or a
//! legacy-style one) plus overrides, and feeds a fixed sample and fixed random model
//! outputs through `scale_model_input` and `step`. Here the same model outputs go through
//! our scheduler twice: once with the golden sample fed into every step (each step
//! checked on its own), once with **our own** output fed forward, so errors accumulate
//! over the whole run (76 calls for PNDM at 75 steps) as they would in a pipeline.
//!
//! Tolerances:
//! - Timesteps: exact. They are integers (or float32 values numpy computes in float64),
//!   and the UNet's time embedding sees them, so any difference is a bug.
//! - ᾱ tables: exact (bit for bit): torch.linspace's fused multiply-add and
//!   torch.cumprod's float64 accumulator are reproduced (src/schedulers/schedule.rs).
//!   Except where a square root enters: torch 2.15's CPU float32 `sqrt` is *not*
//!   correctly rounded (about 17% of random inputs come out 1 ulp away from IEEE `sqrt`;
//!   e.g. √16777215 gives 4096, not 4095.9998), which cannot be reproduced portably.
//!   `init_noise_sigma` (a σ, so one sqrt) is allowed `SQRT_ULPS` = 4 ulps; the
//!   zero-terminal-SNR table, whose sqrt errors pass through `1 − ᾱ_t/ᾱ_{t−1}` (a
//!   cancellation that multiplies them by up to 1/β ≈ 1000) and back into a product
//!   of up to 1000 rounded factors, is allowed `ZSNR_REL` = 1e-5 relative (measured:
//!   3.8e-6; the same computation in numpy with torch's sqrt reproduces torch bit
//!   for bit).
//! - Step outputs and scaled inputs: relative L2 ≤ `STEP_REL_L2` = 1e-5, relative to
//!   the larger of ‖golden output‖ and ‖input sample‖ (fed forward: the largest sample
//!   of the run so far). A step whose result is much smaller than its input (Euler
//!   ancestral's first step from σ = 4096 under zero-terminal SNR cancels a sample of
//!   norm ~6e4 down to ~2e2) cannot be more accurate than the float32 rounding of its
//!   input, in torch either: there torch's 1-ulp-off σ (see below) alone moves the
//!   output by 1e-5 of its own norm. Both sides do
//!   the same float32 operations in the same order, so they agree to rounding; what is
//!   left is the 1-ulp freedom of `logf`/`expf` (DPM-Solver's λ), torch's vectorised
//!   kernels and accumulation over up to 76 steps. A float32 ulp is 6e-8 relative, so
//!   1e-5 leaves two orders of magnitude of headroom while a wrong formula, a wrong
//!   coefficient or an off-by-one timestep gives errors of 1e-3 and up.

use std::collections::BTreeMap;
use std::path::Path;

use roentgen_web::Error;
use roentgen_web::schedulers::{
    self, PredictionType, Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing,
};
use roentgen_web::weights::{DType, WeightIndex};

const STEP_REL_L2: f64 = 1e-5;
const SQRT_ULPS: u32 = 4;
const ZSNR_REL: f64 = 1e-5;

/// Distance in units in the last place between two finite floats of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    assert_eq!(a.is_sign_negative(), b.is_sign_negative(), "{a} vs {b}");
    a.to_bits().abs_diff(b.to_bits())
}
const SHAPE: [usize; 4] = [1, 4, 8, 8];
const N: usize = 256;

struct Fixture {
    bytes: Vec<u8>,
    index: WeightIndex,
}

impl Fixture {
    fn load() -> Self {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run tools/make_scheduler_fixtures.py)",
                path.display()
            )
        });
        let index = WeightIndex::parse("schedulers.safetensors", &bytes).unwrap();
        Fixture { bytes, index }
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.index.get(name).unwrap().shape.clone()
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let shape = self.shape(name);
        self.index.read_f32(&self.bytes, name, &shape).unwrap()
    }

    fn i64(&self, name: &str) -> Vec<i64> {
        let (info, data) = self.index.tensor_bytes(&self.bytes, name).unwrap();
        assert_eq!(info.dtype, DType::I64, "{name}");
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn bytes_of(&self, name: &str) -> &[u8] {
        let (info, data) = self.index.tensor_bytes(&self.bytes, name).unwrap();
        assert_eq!(info.dtype, DType::U8, "{name}");
        data
    }

    /// Timesteps as the UNet gets them (I64 goldens must be exactly representable).
    fn timesteps(&self, name: &str) -> Vec<f32> {
        match self.index.get(name).unwrap().dtype {
            DType::I64 => self
                .i64(name)
                .into_iter()
                .map(|t| {
                    assert_eq!(t as f32 as i64, t);
                    t as f32
                })
                .collect(),
            _ => self.f32(name),
        }
    }

    fn runs(&self) -> Vec<String> {
        self.index
            .tensors
            .keys()
            .filter_map(|k| k.strip_suffix(".spec").map(str::to_owned))
            .collect()
    }
}

fn norm(a: &[f32]) -> f64 {
    a.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// ‖a − b‖₂ / max(‖b‖₂, `floor`), and the index of the largest absolute difference.
fn rel_l2(a: &[f32], b: &[f32]) -> (f64, usize) {
    rel_l2_floor(a, b, 0.0)
}

fn rel_l2_floor(a: &[f32], b: &[f32], floor: f64) -> (f64, usize) {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den, mut worst, mut worst_i) = (0f64, 0f64, -1f64, 0);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let d = (x as f64 - y as f64).abs();
        num += d * d;
        den += (y as f64) * (y as f64);
        if d > worst || d.is_nan() {
            worst = if d.is_nan() { f64::INFINITY } else { d };
            worst_i = i;
        }
    }
    let r = num.sqrt() / den.sqrt().max(floor).max(1e-30);
    (if r.is_nan() { f64::INFINITY } else { r }, worst_i)
}

struct RunReport {
    kind: SchedulerKind,
    calls: usize,
    /// Worst step error with the golden sample fed in (each step on its own).
    forced: f64,
    /// Worst step error with our own output fed forward (the pipeline's situation).
    free: f64,
    /// Worst scale_model_input error (Euler ancestral; 0 for the others).
    scale: f64,
}

/// One pass over a run. `forced`: every step starts from the golden sample, and the
/// error is relative to max(‖golden output‖, ‖input sample‖). Otherwise our own output
/// is fed forward and the floor is the largest sample norm of the run so far (errors made
/// while the latents were large are carried along in absolute terms).
fn trajectory(fx: &Fixture, run: &str, forced: bool) -> RunReport {
    let spec: serde_json::Value =
        serde_json::from_slice(fx.bytes_of(&format!("{run}.spec"))).unwrap();
    let kind: SchedulerKind = spec["kind"].as_str().unwrap().parse().unwrap();
    let steps = spec["steps"].as_u64().unwrap() as usize;
    let config = SchedulerConfig::from_json(run, &spec["config"].to_string()).unwrap();
    let mut s = schedulers::build(kind, &config, steps).unwrap();

    // Timesteps: exact.
    let want_t = fx.timesteps(&format!("{run}.timesteps"));
    assert_eq!(s.timesteps(), &want_t[..], "{run}: timesteps");
    let calls = want_t.len();

    // init_noise_sigma: float32 maths on float32 sigmas, which come from a sqrt.
    let want_ins = fx.f32(&format!("{run}.init_noise_sigma"))[0];
    let got_ins = s.init_noise_sigma();
    assert!(
        ulps(got_ins, want_ins) <= SQRT_ULPS,
        "{run}: init_noise_sigma {got_ins} vs {want_ins}"
    );

    let sample = fx.f32("sample");
    let model_outputs = fx.f32("model_outputs");
    let outputs = fx.f32(&format!("{run}.outputs"));
    assert_eq!(
        fx.shape(&format!("{run}.outputs")),
        [calls, SHAPE[0], SHAPE[1], SHAPE[2], SHAPE[3]]
    );
    let scaled = fx
        .index
        .contains(&format!("{run}.scaled"))
        .then(|| fx.f32(&format!("{run}.scaled")));
    let noise = fx
        .index
        .contains(&format!("{run}.noise"))
        .then(|| fx.f32(&format!("{run}.noise")));
    assert_eq!(s.needs_noise(), noise.is_some(), "{run}: needs_noise");

    // what StableDiffusionPipeline.prepare_latents does (forced: with torch's σ)
    let ins = if forced { want_ins } else { got_ins };
    let mut x: Vec<f32> = sample.iter().map(|&v| v * ins).collect();
    let mut largest = norm(&x);
    let mut r = RunReport {
        kind,
        calls,
        forced: 0.0,
        free: 0.0,
        scale: 0.0,
    };
    for k in 0..calls {
        let at = k * N..(k + 1) * N;
        if forced && k > 0 {
            x = outputs[(k - 1) * N..k * N].to_vec();
        }
        largest = largest.max(norm(&x));
        // scale_model_input
        let mut input = x.clone();
        s.scale_model_input(&mut input, k);
        match &scaled {
            Some(want) if forced => {
                let (e, i) = rel_l2(&input, &want[at.clone()]);
                assert!(
                    e <= STEP_REL_L2,
                    "{run}: scaled input of call {k}: rel L2 {e:.3e} > {STEP_REL_L2:e}, worst at {i}: {} vs {}",
                    input[i],
                    want[at.start + i]
                );
                r.scale = r.scale.max(e);
            }
            Some(_) => {} // a function of x alone, checked in the forced pass
            None => assert_eq!(input, x, "{run}: scale_model_input must be the identity"),
        }
        // step
        let n = noise.as_ref().map(|n| &n[at.clone()]);
        let out = s.step(&model_outputs[at.clone()], k, &x, n);
        let want = &outputs[at.clone()];
        let floor = if forced { norm(&x) } else { largest };
        let (e, i) = rel_l2_floor(&out, want, floor);
        assert!(
            e <= STEP_REL_L2,
            "{run} ({}): step {k} of {calls} (t = {}): rel L2 {e:.3e} > {STEP_REL_L2:e}, worst at {i}: {} vs {}",
            if forced {
                "golden input"
            } else {
                "own output fed forward"
            },
            want_t[k],
            out[i],
            want[i]
        );
        if forced {
            r.forced = r.forced.max(e);
        } else {
            r.free = r.free.max(e);
        }
        x = out;
    }
    r
}

#[test]
fn every_scheduler_matches_diffusers_step_for_step() {
    let fx = Fixture::load();
    let runs = fx.runs();
    assert!(runs.len() >= 20, "only {} runs in the fixture", runs.len());
    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    for run in &runs {
        let f = trajectory(&fx, run, true);
        let r = trajectory(&fx, run, false);
        eprintln!(
            "{run:28} {:8} {:3} calls  max rel L2: step {:.2e} (own outputs fed forward {:.2e}), scaled input {:.2e}",
            f.kind.name(),
            f.calls,
            f.forced,
            r.free,
            f.scale
        );
        let w = worst.entry(f.kind.name()).or_default();
        *w = w.max(f.forced).max(r.free).max(f.scale);
    }
    eprintln!("worst per scheduler: {worst:?}");
    for kind in SchedulerKind::ALL {
        assert!(worst.contains_key(kind.name()), "no fixture run for {kind}");
    }
}

#[test]
fn roentgen_pndm_75_steps_take_76_calls() {
    let fx = Fixture::load();
    let spec: serde_json::Value = serde_json::from_slice(fx.bytes_of("pndm_75.spec")).unwrap();
    let config = SchedulerConfig::from_json("roentgen", &spec["config"].to_string()).unwrap();
    let s = schedulers::build(SchedulerKind::Pndm, &config, 75).unwrap();
    let t = s.timesteps();
    assert_eq!(t.len(), 76);
    // leading spacing, ratio 1000 // 75 = 13, steps_offset 1; the second timestep repeats
    assert_eq!(&t[..4], &[963.0, 950.0, 950.0, 937.0]);
    assert_eq!(t[75], 1.0);
}

#[test]
fn alphas_cumprod_match_torch_bit_for_bit() {
    let fx = Fixture::load();
    let base = SchedulerConfig::stable_diffusion_v1();
    let cases: [(&str, SchedulerConfig); 4] = [
        ("scaled_linear", base.clone()),
        (
            "linear",
            SchedulerConfig {
                beta_schedule: schedulers::BetaSchedule::Linear,
                beta_start: 0.0001,
                beta_end: 0.02,
                ..base.clone()
            },
        ),
        (
            "squaredcos_cap_v2",
            SchedulerConfig {
                beta_schedule: schedulers::BetaSchedule::SquaredcosCapV2,
                ..base.clone()
            },
        ),
        (
            "scaled_linear_zsnr",
            SchedulerConfig {
                rescale_betas_zero_snr: true,
                ..base.clone()
            },
        ),
    ];
    for (name, config) in cases {
        let want = fx.f32(&format!("schedule.{name}"));
        let got = schedulers::alphas_cumprod(SchedulerKind::Ddim, &config);
        assert_eq!(got.len(), want.len());
        // zero-SNR rescaling takes a sqrt (see the module docs); the rest is exact
        let (mut worst_ulps, mut worst_rel) = (0, 0f64);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let u = ulps(g, w);
            let r = if g == w {
                0.0
            } else {
                ((g as f64 - w as f64) / w as f64).abs()
            };
            if config.rescale_betas_zero_snr {
                assert!(
                    r <= ZSNR_REL,
                    "{name}: alphas_cumprod[{i}] {g:e} vs {w:e} ({r:.2e} relative)"
                );
            } else {
                assert_eq!(
                    u, 0,
                    "{name}: alphas_cumprod[{i}] {g:e} vs {w:e} ({u} ulps)"
                );
            }
            worst_ulps = worst_ulps.max(u);
            worst_rel = worst_rel.max(r);
        }
        eprintln!("{name}: worst {worst_ulps} ulps, {worst_rel:.2e} relative");
    }
}

#[test]
fn config_reads_diffusers_json() {
    // A DPM-Solver config as diffusers writes it: -Infinity, unknown keys, nulls.
    let json = r#"{
        "_class_name": "DPMSolverMultistepScheduler",
        "_diffusers_version": "0.42.1",
        "algorithm_type": "dpmsolver++",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "dynamic_thresholding_ratio": 0.995, "euler_at_final": false,
        "final_sigmas_type": "zero", "lambda_min_clipped": -Infinity,
        "lower_order_final": true, "num_train_timesteps": 1000,
        "prediction_type": "v_prediction", "sample_max_value": 1.0,
        "solver_order": 2, "solver_type": "midpoint", "steps_offset": 1,
        "thresholding": false, "timestep_spacing": "trailing", "trained_betas": null,
        "use_karras_sigmas": false, "variance_type": null, "name": "NaN is \"NaN\""
    }"#;
    let c = SchedulerConfig::from_json("scheduler_config.json", json).unwrap();
    assert_eq!(c.lambda_min_clipped, f64::NEG_INFINITY);
    assert_eq!(c.prediction_type, PredictionType::VPrediction);
    assert_eq!(c.timestep_spacing, Some(TimestepSpacing::Trailing));
    assert_eq!(
        SchedulerKind::from_class_name(c.class_name.as_deref().unwrap()),
        Some(SchedulerKind::DpmSolverMultistep)
    );
    let s = schedulers::build(SchedulerKind::DpmSolverMultistep, &c, 20).unwrap();
    assert_eq!(s.timesteps().len(), 20);

    // A finite lambda_min_clipped drops the last training steps from the grid (the
    // fixture run dpm_10_lambda_clipped checks the values).
    let clipped = SchedulerConfig {
        lambda_min_clipped: -2.5,
        timestep_spacing: Some(TimestepSpacing::Linspace),
        ..c.clone()
    };
    let s = schedulers::build(SchedulerKind::DpmSolverMultistep, &clipped, 10).unwrap();
    assert!(s.timesteps()[0] < 999.0, "{:?}", s.timesteps());

    // Missing keys: the class defaults.
    let c = SchedulerConfig::from_json("x.json", "{}").unwrap();
    assert_eq!(c, SchedulerConfig::default());
    assert_eq!(c.num_train_timesteps, 1000);
    assert!(c.clip_sample);
}

#[test]
fn bad_configs_and_requests_are_errors_with_a_sentence() {
    let err = |r: Result<Box<dyn Scheduler>, Error>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    };
    // malformed JSON / bad values
    let e = SchedulerConfig::from_json(
        "scheduler/scheduler_config.json",
        "{\"beta_schedule\": \"cubic\"}",
    )
    .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("cubic"), "{e}");
    let e = SchedulerConfig::from_json("s.json", "{\"trained_betas\": [0.1, 0.2]}").unwrap_err();
    assert!(e.to_string().contains("trained_betas"), "{e}");

    let base = SchedulerConfig::stable_diffusion_v1();
    let m = err(schedulers::build(SchedulerKind::Pndm, &base, 0));
    assert!(m.contains("inference steps"), "{m}");
    let m = err(schedulers::build(SchedulerKind::Ddim, &base, 1001));
    assert!(m.contains("1000"), "{m}");
    let karras = SchedulerConfig {
        use_karras_sigmas: true,
        ..base.clone()
    };
    let m = err(schedulers::build(
        SchedulerKind::DpmSolverMultistep,
        &karras,
        20,
    ));
    assert!(m.contains("Karras"), "{m}");
    let sample = SchedulerConfig {
        prediction_type: PredictionType::Sample,
        ..base.clone()
    };
    let m = err(schedulers::build(
        SchedulerKind::EulerAncestral,
        &sample,
        20,
    ));
    assert!(m.contains("sample"), "{m}");
    // a steps_offset that pushes a timestep off the table
    let off = SchedulerConfig {
        steps_offset: 50,
        ..base.clone()
    };
    let m = err(schedulers::build(SchedulerKind::Ddim, &off, 1000));
    assert!(m.contains("outside"), "{m}");

    assert!("heun".parse::<SchedulerKind>().is_err());
    for k in SchedulerKind::ALL {
        assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), k);
        assert_eq!(k.class_name().parse::<SchedulerKind>().unwrap(), k);
        assert_eq!(k.to_string(), k.name());
    }
}

#[test]
fn every_scheduler_runs_on_a_batch_and_any_step_count() {
    // Elementwise maths: two images back to back give each image's own result, and
    // odd step counts (1, 3, 999) build and step without NaN.
    let base = SchedulerConfig::stable_diffusion_v1();
    for kind in SchedulerKind::ALL {
        for steps in [1, 3, 50, 999] {
            let mut a = schedulers::build(kind, &base, steps).unwrap();
            let calls = a.timesteps().len();
            let mut x: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
            x.iter_mut().for_each(|v| *v *= a.init_noise_sigma());
            for k in 0..calls {
                let mut input = x.clone();
                a.scale_model_input(&mut input, k);
                let eps: Vec<f32> = input.iter().map(|v| 0.5 * v).collect();
                let noise: Vec<f32> = (0..8).map(|i| ((i + k) as f32 * 1.3).cos()).collect();
                x = a.step(&eps, k, &x, a.needs_noise().then_some(&noise[..]));
            }
            assert!(
                x.iter().all(|v| v.is_finite()),
                "{kind} with {steps} steps: {x:?}"
            );
        }
        // batch of two identical halves = two identical results
        let mut s = schedulers::build(kind, &base, 10).unwrap();
        let half: Vec<f32> = (0..4).map(|i| i as f32 - 1.5).collect();
        let x: Vec<f32> = half.iter().chain(&half).copied().collect();
        let noise = [0.25f32; 8];
        let out = s.step(&x, 0, &x, s.needs_noise().then_some(&noise[..]));
        assert_eq!(out[..4], out[4..], "{kind}");
    }
}

#[test]
fn dpm_solver_refuses_a_repeated_sigma() {
    // "leading" + steps_offset 1 at 999 steps puts t = 1000 onto σ(999), so two calls
    // share a σ: diffusers divides by the zero step and returns NaN; we refuse.
    let leading = SchedulerConfig {
        timestep_spacing: Some(TimestepSpacing::Leading),
        ..SchedulerConfig::stable_diffusion_v1()
    };
    let m = match schedulers::build(SchedulerKind::DpmSolverMultistep, &leading, 999) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    };
    assert!(m.contains("twice"), "{m}");
    assert!(schedulers::build(SchedulerKind::DpmSolverMultistep, &leading, 998).is_ok());
}
