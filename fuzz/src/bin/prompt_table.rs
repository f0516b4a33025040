//! AFL++ target: `roentgen_web::fuzzing::prompt_table` (scripts/fuzz.sh prompt_table MINUTES).
fn main() {
    afl::fuzz!(|data: &[u8]| roentgen_web::fuzzing::prompt_table(data));
}
