//! AFL++ target: `roentgen_web::fuzzing::scheduler_config` (scripts/fuzz.sh scheduler_config MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::scheduler_config(data));
}
