//! Fifty generations in a row (issue 13, "long runs"): the GPU memory the buffer pool
//! holds and the process's resident memory stay flat. Each generation runs the lean
//! plan as the page does (the UNet's weights released before the decode and reloaded
//! before the next), with a different prompt, seed and scheduler each time.
//!
//! One test in its own binary: it reads the GPU's memory counters and the process's
//! resident set, which other tests running beside it would move.

use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};
use roentgen_web::gpu::Gpu;
use roentgen_web::pipeline::{Control, GenerateRequest, Pipeline};
use roentgen_web::schedulers::SchedulerKind;

const GENERATIONS: usize = 50;
/// Host memory may move by allocator noise (freed pages kept by malloc, driver caches
/// filled by the first runs); a leak of one image's latents per run would pass this in
/// 50 runs at 64x64, so the GPU figures, which are exact, carry the real check.
const RSS_SLACK_KIB: u64 = 16 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn fifty_generations_keep_gpu_and_host_memory_flat() {
    let gpu = pollster::block_on(Gpu::new()).unwrap();
    let dir = format!("{}/tests/fixtures/tiny-sd", env!("CARGO_MANIFEST_DIR"));
    let ck = Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap();
    let pipe = pollster::block_on(Pipeline::load(&gpu, &ck, &mut |_| {})).unwrap();
    let prompts = [
        "Small right-sided pleural effusion.",
        "Cardiomegaly.",
        "No acute cardiopulmonary process.",
    ];
    let mut rows = Vec::new();
    for i in 0..GENERATIONS {
        pipe.ensure_unet(&gpu).unwrap();
        gpu.reset_peak_memory();
        let req = GenerateRequest {
            prompt: prompts[i % 3].into(),
            seed: i as u64,
            steps: 2,
            scheduler: SchedulerKind::ALL[i % 4],
            width: 64,
            height: 64,
            ..Default::default()
        };
        let images = {
            let plan = pipe.plan(req.clone()).unwrap();
            pollster::block_on(pipe.generate(&gpu, &plan, &mut |_| Control::Continue))
                .unwrap()
                .images
        };
        assert_eq!(images.len(), 1);
        let m = gpu.memory();
        rows.push((m.allocated, m.peak, rss_kib()));
    }
    eprintln!("| generation | GPU allocated after | GPU peak during | host RSS after |");
    for (i, (a, p, r)) in rows.iter().enumerate() {
        if i < 3 || (i + 1) % 10 == 0 {
            eprintln!(
                "| {} | {} KiB | {} KiB | {} MiB |",
                i + 1,
                a >> 10,
                p >> 10,
                r >> 10
            );
        }
    }
    // After the first few (schedulers differ in their buffers until each has run once),
    // the pool holds exactly as much after every generation, and no peak grows.
    let settled = &rows[4..];
    let (a0, p_max) = (settled[0].0, rows.iter().map(|r| r.1).max().unwrap());
    for (k, (a, p, _)) in settled.iter().enumerate() {
        assert_eq!(
            *a,
            a0,
            "generation {}: the pool holds {a} bytes, {a0} after generation 5",
            k + 5
        );
        assert!(*p <= p_max);
    }
    let (r0, r_end) = (settled[0].2, rows.last().unwrap().2);
    assert!(
        r_end <= r0 + RSS_SLACK_KIB,
        "host memory grew from {r0} KiB to {r_end} KiB over {} generations",
        GENERATIONS - 5
    );
}
