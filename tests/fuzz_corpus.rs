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

/// The error a reproducer of fuzz/regressions gets from `WeightIndex::parse`.
fn weight_error(target: &str, file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
        .join(file);
    let bytes = std::fs::read(&path).expect("the reproducer is committed");
    roentgen_web::weights::WeightIndex::parse(file, &bytes)
        .expect_err("a reproducer is refused")
        .to_string()
}

/// A 404-byte torch zip whose `data.pkl` is a dict holding itself under 16 keys: the
/// tensor search walked 16⁸ nested entries (a hang). Now refused at once, naming the cycle.
#[test]
fn a_state_dict_that_contains_itself_is_refused_not_walked() {
    for file in [
        "pickle-dict-references-itself-16x.bin",
        "pickle-dict-references-itself-2x.bin",
    ] {
        let err = weight_error("torch_bin", file);
        assert!(
            err.contains(file)
                && err.contains("contains itself")
                && err.contains("archive/data.pkl"),
            "{err}"
        );
    }
}

/// No cycle, but nine levels of dicts, each holding the next (one memo reference) under
/// 16 keys: 16⁹ entries to walk from 1.5 KB. Refused after 100000 entries (a checkpoint has thousands).
#[test]
fn a_state_dict_tree_of_billions_of_shared_entries_is_refused() {
    let file = "pickle-dict-shared-16-ways-9-deep.bin";
    let err = weight_error("torch_bin", file);
    assert!(
        err.contains(file) && err.contains("more than 100000 entries"),
        "{err}"
    );
}

/// `num_train_timesteps` sized every scheduler's tables: 10⁸ took a minute and a GB,
/// 4·10⁹ aborted on a failed allocation. Refused above 100000, naming the field.
#[test]
fn absurd_training_step_counts_are_refused_before_anything_is_allocated() {
    use roentgen_web::schedulers::{MAX_TRAIN_TIMESTEPS, SchedulerConfig};
    let file = "scheduler/scheduler_config.json";
    for n in [100_000_001u64, 4_000_000_000, u64::MAX] {
        let err = SchedulerConfig::from_json(file, &format!("{{\"num_train_timesteps\": {n}}}"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(file) && err.contains("num_train_timesteps") && err.contains("100000"),
            "{err}"
        );
    }
    let ok = format!("{{\"num_train_timesteps\": {MAX_TRAIN_TIMESTEPS}}}");
    assert!(SchedulerConfig::from_json(file, &ok).is_ok());
}

#[test]
fn image_decode_inputs_do_not_panic() {
    replay("image_decode", roentgen_web::fuzzing::image_decode);
}
