//! AFL++ target: `roentgen_web::fuzzing::torch_bin` (scripts/fuzz.sh torch_bin MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::torch_bin(data));
}
