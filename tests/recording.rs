//! Cached recording (issue 23): a bind group made for a kernel and its buffers is kept
//! and reused by the next dispatch of the same kernel on the same buffers (the weights,
//! and the pool's buffers handed back for the same shapes), with the parameters at a
//! dynamic offset of one persistent buffer. Reused or fresh, the outputs are the same
//! bits.

mod common;

use common::gpu;
use roentgen_web::checkpoint::{Checkpoint, DirSource, LoadOptions};

/// The first element whose bits differ, if any.
fn first_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (&x, &y))| (i, x, y))
}

#[test]
fn cached_bind_groups_give_the_bits_of_fresh_ones() {
    let gpu = gpu();
    let dir = format!("{}/tests/fixtures/tiny-sd", env!("CARGO_MANIFEST_DIR"));
    let ck = Checkpoint::new(DirSource::new(dir).unwrap(), LoadOptions::default()).unwrap();
    let te = pollster::block_on(ck.text_encoder(gpu)).unwrap();
    let unet = pollster::block_on(ck.unet(gpu)).unwrap();
    let ids: Vec<Vec<u32>> = vec![(0..77).map(|i| (i * 31 % 1000) as u32).collect(); 2];
    let x: Vec<f32> = (0..2 * 16 * 16 * 4)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let run = || {
        let ctx = te.forward(gpu, &ids).unwrap();
        let xt = gpu.upload(&x, &[2, 16, 16, 4]).unwrap();
        let eps = unet.forward(gpu, &xt, 801.0, &ctx).unwrap();
        (
            pollster::block_on(gpu.read(&ctx)).unwrap(),
            pollster::block_on(gpu.read(&eps)).unwrap(),
        )
    };
    gpu.set_bind_group_cache(false);
    let fresh = run();
    gpu.set_bind_group_cache(true);
    let first = run(); // fills the cache
    let second = run(); // finds it
    for (what, got) in [("first", &first), ("second", &second)] {
        let te = first_difference(&got.0, &fresh.0);
        assert!(
            te.is_none(),
            "{what} cached run: text encoder differs at {te:?}"
        );
        let un = first_difference(&got.1, &fresh.1);
        assert!(un.is_none(), "{what} cached run: UNet differs at {un:?}");
    }
}
