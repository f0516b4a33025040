//! The memory plan (`pipeline::MemoryPlan`) and the dry run that measures it.
//!
//! - A dry run (`Gpu::set_dry_run`) allocates exactly what a real run allocates: the
//!   same generation reports the same peak both ways. BENCHMARKS.md's full-size
//!   whole-generation peaks come from dry runs, so this is what makes them true.
//! - The lean plan releases the UNet's weights before the VAE decodes, refuses to
//!   generate until they are reloaded, reloads them from the checkpoint, and gives
//!   bit-identical images to the resident plan; its peak is below the resident one.
//!
//! One test in its own binary: it reads the GPU's memory counters, which other tests
//! running beside it on the same device would move.

mod common;

use common::request;
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::gpu::Gpu;
use roentgen_web::pipeline::{Control, GenerateRequest, MemoryPlan, Pipeline};
use roentgen_web::schedulers::SchedulerKind;

/// 3 steps at 128x128 (at this size the tiny UNet's attention is the peak, so the
/// lean plan's saving shows only at full size: BENCHMARKS.md; here it must cost nothing).
fn small_request() -> GenerateRequest {
    GenerateRequest {
        steps: 3,
        ..request(SchedulerKind::Pndm)
    }
}

fn peak_of(gpu: &Gpu, pipe: &Pipeline) -> (u64, Vec<f32>) {
    gpu.reset_peak_memory();
    let images = common::generate(&pipe, gpu, small_request(), &mut |_| Control::Continue).unwrap();
    (gpu.memory().peak, images[0].rgb.clone())
}

#[test]
fn dry_runs_measure_real_peaks_and_the_lean_plan_changes_no_value() {
    let gpu = pollster::block_on(Gpu::new()).unwrap();
    let dir = format!("{}/tests/fixtures/tiny-sd", env!("CARGO_MANIFEST_DIR"));
    let ck = Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap();
    let mut pipe = pollster::block_on(Pipeline::load(&gpu, &ck, &mut |_| {})).unwrap();
    assert_eq!(pipe.memory, MemoryPlan::Lean, "lean is the default");

    // 1. a real lean generation releases the UNet
    let loaded_weights = gpu.memory().weights;
    let (lean_peak, lean_image) = peak_of(&gpu, &pipe);
    assert!(
        !pipe.unet_loaded(),
        "the lean plan keeps the UNet's weights"
    );
    let weights_after = gpu.memory().weights;
    assert!(
        weights_after < loaded_weights,
        "the UNet's buffers were not freed"
    );
    // the next generation reads the released UNet back by itself: the pipeline owns
    // its way back to the checkpoint
    let again = common::generate(&pipe, &gpu, small_request(), &mut |_| Control::Continue)
        .expect("the released UNet was not reloaded");
    assert!(
        again[0].rgb == lean_image,
        "the reloaded UNet changed the image"
    );
    assert!(
        !pipe.unet_loaded(),
        "the lean plan keeps the UNet's weights"
    );

    // 2. the same generation dry: the same peak to the byte
    pipe.ensure_unet(&gpu).unwrap();
    assert!(
        gpu.memory().weights > weights_after,
        "the reload uploads the UNet"
    );
    gpu.set_dry_run(true);
    let (dry_peak, _) = peak_of(&gpu, &pipe);
    gpu.set_dry_run(false);
    eprintln!("peak: real {lean_peak} B, dry {dry_peak} B");
    assert_eq!(
        dry_peak, lean_peak,
        "a dry run's peak differs from the real run's"
    );

    // 3. resident: the same image, the UNet stays, the peak is no lower
    pipe.ensure_unet(&gpu).unwrap();
    let all_weights = gpu.memory().weights;
    pipe.memory = MemoryPlan::Resident;
    let (resident_peak, resident_image) = peak_of(&gpu, &pipe);
    assert!(pipe.unet_loaded(), "the resident plan released the UNet");
    assert!(
        lean_image == resident_image,
        "the lean plan (reloaded UNet) changed the image"
    );
    eprintln!("peak: lean {lean_peak} B, resident {resident_peak} B");
    assert!(
        resident_peak >= lean_peak,
        "releasing the UNet before the decode raised the peak ({lean_peak} vs {resident_peak})"
    );
    assert_eq!(
        gpu.memory().weights,
        all_weights,
        "the resident plan freed weights"
    );
}
