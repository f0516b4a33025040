//! AFL++ target: `roentgen_web::fuzzing::tokenizer` (scripts/fuzz.sh tokenizer MINUTES).
fn main() {
    // The real vocabulary is read and built once, before the fuzzing loop.
    roentgen_web::fuzzing::fixture_tokenizer();
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::tokenizer(data));
}
