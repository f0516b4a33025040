//! AFL++ target: `roentgen_web::fuzzing::image_decode` (scripts/fuzz.sh image_decode MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::image_decode(data));
}
