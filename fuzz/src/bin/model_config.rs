//! AFL++ target: `roentgen_web::fuzzing::model_config` (scripts/fuzz.sh model_config MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::model_config(data));
}
