//! End to end: our `generate` against diffusers' `StableDiffusionPipeline` run on the
//! same fixture checkpoint with the same prompt, seed and settings
//! (`tools/make_fixtures.py`: 128x128, 10 steps, guidance 4, seed 0).
//!
//! Bars (the issue's): final latents at relative L2 ≤ 1e-3, the image at PSNR ≥ 40 dB.
//! They are looser than the single-call 1e-4 because 10-11 UNet calls compound the
//! ~1e-6 per-call difference, and the random UNets amplify it (latents reach std 13-17).

mod common;

use common::{golden, gpu, psnr, rel_l2, request};
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::pipeline::{Control, GenerateRequest, Pipeline};
use roentgen_web::schedulers::SchedulerKind;

const LATENTS_REL_L2: f64 = 1e-3;
const IMAGE_PSNR_DB: f64 = 40.0;
const FIXTURES: [&str; 3] = ["tiny-sd", "tiny-sd-bin", "tiny-sd-alt"];

fn checkpoint(name: &str) -> Checkpoint<DirSource> {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap()
}

fn pipeline(name: &str) -> Pipeline {
    pollster::block_on(Pipeline::load(gpu(), &checkpoint(name), &mut |_| {})).unwrap()
}

#[test]
fn generate_matches_diffusers() {
    for name in FIXTURES {
        let ck = checkpoint(name);
        let pipe = pollster::block_on(Pipeline::load(gpu(), &ck, &mut |_| {})).unwrap();
        for (kind, key) in [
            (SchedulerKind::Pndm, "pndm"),
            (SchedulerKind::DpmSolverMultistep, "dpmpp2m"),
        ] {
            // The lean plan released the UNet after the previous generation.
            pipe.ensure_unet(gpu()).unwrap();
            let mut calls = 0;
            let images = common::generate(&pipe, gpu(), request(kind), &mut |p| {
                calls = p.call;
                assert_eq!(p.preview.rgb.len(), p.preview.width * p.preview.height * 3);
                Control::Continue
            })
            .unwrap();
            let img = &images[0];
            let (e, i, g, w) = rel_l2(&img.latents, &golden(name, &format!("pipe.{key}.latents")));
            eprintln!("{name} {key}: {calls} UNet calls, latents rel L2 {e:.2e}");
            assert!(
                e <= LATENTS_REL_L2,
                "{name} {key}: latents rel L2 {e:.3e} > {LATENTS_REL_L2:.0e}; worst element {i}: got {g}, want {w}"
            );
            let p = psnr(&img.rgb, &golden(name, &format!("pipe.{key}.image")));
            eprintln!("{name} {key}: image PSNR {p:.1} dB");
            assert!(
                p >= IMAGE_PSNR_DB,
                "{name} {key}: image PSNR {p:.1} dB < {IMAGE_PSNR_DB} dB"
            );
        }
    }
}

#[test]
fn generation_can_be_cancelled_between_steps() {
    let pipe = pipeline("tiny-sd");
    let mut seen = 0;
    let images = common::generate(&pipe, gpu(), request(SchedulerKind::Pndm), &mut |p| {
        seen = p.call;
        if p.call == 2 {
            Control::Cancel
        } else {
            Control::Continue
        }
    })
    .unwrap();
    assert!(images.is_empty());
    assert_eq!(seen, 2, "no step runs after a cancel");
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    let pipe = pipeline("tiny-sd");
    let mut req = request(SchedulerKind::Pndm);
    req.width = 100;
    let e = common::generate(&pipe, gpu(), req.clone(), &mut |_| Control::Continue)
        .err()
        .expect("100 px is not a multiple of 64");
    assert!(e.to_string().contains("multiples of"), "{e}");
}

#[test]
fn nan_and_out_of_range_options_are_refused() {
    let pipe = pipeline("tiny-sd");
    let cases: Vec<(&str, Box<dyn Fn(&mut GenerateRequest)>, &str)> = vec![
        (
            "NaN guidance",
            Box::new(|r| r.guidance = f32::NAN),
            "guidance",
        ),
        (
            "infinite guidance",
            Box::new(|r| r.guidance = f32::INFINITY),
            "guidance",
        ),
        (
            "negative guidance",
            Box::new(|r| r.guidance = -1.0),
            "guidance",
        ),
        ("huge steps", Box::new(|r| r.steps = 100_000), "steps"),
        ("huge size", Box::new(|r| r.width = 64 * 1000), "at most"),
        ("huge count", Box::new(|r| r.count = 1_000_000), "count"),
    ];
    for (what, edit, word) in cases {
        let mut req = request(SchedulerKind::Pndm);
        edit(&mut req);
        let e = common::generate(&pipe, gpu(), req.clone(), &mut |_| Control::Continue)
            .err()
            .unwrap_or_else(|| panic!("{what} generated"));
        assert!(e.to_string().contains(word), "{what}: {e}");
    }
}

/// `roentgen batch --batch-size`: images of different prompts and seeds through the UNet
/// together are, to the byte, the images made one at a time (every kernel computes a
/// batch element from that element alone). Euler ancestral draws noise at every step:
/// each image from its own generator.
#[test]
fn a_batch_of_separately_seeded_images_equals_one_at_a_time() {
    use roentgen_web::generation::BatchItem;
    use roentgen_web::pipeline::MemoryPlan;
    let mut pipe = pipeline("tiny-sd");
    pipe.memory = MemoryPlan::Resident;
    let items = [
        BatchItem {
            prompt: "Small right-sided pleural effusion.".into(),
            negative_prompt: String::new(),
            seed: 3,
        },
        BatchItem {
            prompt: "Cardiomegaly.".into(),
            negative_prompt: "blurry".into(),
            seed: 11,
        },
        BatchItem {
            prompt: "No acute cardiopulmonary process.".into(),
            negative_prompt: String::new(),
            seed: 3,
        },
    ];
    for kind in [SchedulerKind::Pndm, SchedulerKind::EulerAncestral] {
        let mut req = request(kind);
        req.steps = 4;
        let mut batch_req: roentgen_web::generation::Request = req.clone().into();
        batch_req.prompts = roentgen_web::generation::Prompts::Batch(items.to_vec());
        let batch = common::generate(&pipe, gpu(), batch_req, &mut |_| Control::Continue).unwrap();
        assert_eq!(batch.len(), items.len());
        for (k, it) in items.iter().enumerate() {
            let one = GenerateRequest {
                prompt: it.prompt.clone(),
                negative_prompt: it.negative_prompt.clone(),
                seed: it.seed,
                count: 1,
                ..req.clone()
            };
            let alone =
                common::generate(&pipe, gpu(), one.clone(), &mut |_| Control::Continue).unwrap();
            assert_eq!(
                batch[k].latents, alone[0].latents,
                "{kind:?} image {k}: latents differ"
            );
            assert_eq!(
                batch[k].gray8(),
                alone[0].gray8(),
                "{kind:?} image {k}: pixels differ"
            );
        }
        assert_ne!(batch[0].latents, batch[2].latents, "the prompt must matter");
    }
}
