//! AFL++ target: `roentgen_web::fuzzing::tokenizer` (scripts/fuzz.sh tokenizer MINUTES).
fn main() {
    // The fixture vocabularies are read and built once, before the fuzzing loop.
    roentgen_web::fuzzing::fixture_tokenizer();
    roentgen_web::fuzzing::fixture_wordpiece();
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::tokenizer(data));
}
