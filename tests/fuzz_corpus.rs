//! Replays the fuzzers' inputs (fuzz/seeds, the minimised fuzz/corpus and the crash
//! reproducers in fuzz/regressions, one folder per target) through the fuzz targets of
//! `roentgen_web::fuzzing`: every reader must return, Ok or Err, without panicking.
//! See docs/RELIABILITY.md and scripts/fuzz.sh.

use std::panic;
use std::path::{Path, PathBuf};

const KINDS: [&str; 3] = ["seeds", "corpus", "regressions"];

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in KINDS {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("a readable fuzz folder").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `target` on every input of its folders; fails naming each input that panicked.
fn replay(name: &str, target: fn(&[u8])) {
    let files = inputs(name);
    assert!(
        !files.is_empty(),
        "no inputs for fuzz target `{name}` in fuzz/{{seeds,corpus,regressions}}/{name}"
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable fuzz input");
            panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "fuzz target `{name}` panicked on {} of {} inputs (reproduce one with `fuzz/target/release/{name} < FILE` after `cd fuzz && cargo afl build --release`, or rerun this test with a single file):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn safetensors_inputs_do_not_panic() {
    replay("safetensors", roentgen_web::fuzzing::safetensors);
}

#[test]
fn torch_bin_inputs_do_not_panic() {
    replay("torch_bin", roentgen_web::fuzzing::torch_bin);
}

#[test]
fn model_config_inputs_do_not_panic() {
    replay("model_config", roentgen_web::fuzzing::model_config);
}

#[test]
fn scheduler_config_inputs_do_not_panic() {
    replay("scheduler_config", roentgen_web::fuzzing::scheduler_config);
}

#[test]
fn tokenizer_inputs_do_not_panic() {
    replay("tokenizer", roentgen_web::fuzzing::tokenizer);
}

#[test]
fn prompt_table_inputs_do_not_panic() {
    replay("prompt_table", roentgen_web::fuzzing::prompt_table);
}
