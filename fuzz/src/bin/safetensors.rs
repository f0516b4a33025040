//! AFL++ target: `roentgen_web::fuzzing::safetensors` (scripts/fuzz.sh safetensors MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::safetensors(data));
}
