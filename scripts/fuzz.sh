#!/usr/bin/env bash
# Fuzzes one reader of the library with AFL++ (cargo-afl, stable Rust) for MINUTES, then
# minimises what it found into fuzz/corpus/TARGET (replayed by `cargo test --test
# fuzz_corpus`) and prints the figures docs/RELIABILITY.md records.
#
#   scripts/fuzz.sh TARGET MINUTES        e.g. scripts/fuzz.sh safetensors 20
#   scripts/fuzz.sh --list                the targets
#
# One fuzzer, one core, at `nice -n 19` (a build or test run beside it keeps priority).
# Starts from fuzz/seeds/TARGET plus the committed corpus and regressions; works in
# fuzz/out/TARGET (git-ignored; its crashes/ and hangs/ are what to triage). A crash
# found: reproduce it with `fuzz/target/release/TARGET < FILE`, fix the reader, and keep
# the input in fuzz/regressions/TARGET/ (see docs/RELIABILITY.md).
#
# Installs what is missing: cargo-afl (`cargo install cargo-afl`) and its AFL++ build
# (`cargo afl config --build`; needs make and a C compiler).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$ROOT/fuzz"
TARGETS=$(cd "$FUZZ/src/bin" && ls -- *.rs | sed 's/\.rs$//' | tr '\n' ' ')

if [[ "${1:-}" == "--list" ]]; then
    echo "$TARGETS"
    exit 0
fi
if [[ $# -ne 2 || ! "$2" =~ ^[0-9]+$ || "$2" -lt 1 ]]; then
    echo "usage: scripts/fuzz.sh TARGET MINUTES   (targets: $TARGETS)" >&2
    exit 2
fi
TARGET="$1"
MINUTES="$2"
if [[ ! -f "$FUZZ/src/bin/$TARGET.rs" ]]; then
    echo "no fuzz target \`$TARGET\`; the targets are: $TARGETS" >&2
    exit 2
fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "== installing cargo-afl"
    nice -n 19 cargo install cargo-afl
fi
# `cargo afl fuzz` refuses to run until AFL++ is built for this toolchain.
if ! grep -q "afl-fuzz.*options" <<<"$(cargo afl fuzz -h 2>&1 || true)"; then
    echo "== building AFL++ (cargo afl config --build)"
    nice -n 19 cargo afl config --build
fi

cd "$FUZZ"
BIN="$FUZZ/target/release/$TARGET"
# FUZZ_NO_BUILD=1 runs the binary already built (e.g. while the tree is being edited).
if [[ "${FUZZ_NO_BUILD:-0}" == 1 && -x "$BIN" ]]; then
    echo "== using the fuzz target already built: $BIN"
else
    echo "== building fuzz target $TARGET (instrumented, release + debug assertions)"
    nice -n 19 cargo afl build --release --bin "$TARGET"
fi

# The starting inputs: seeds, the committed (minimised) corpus, the crash reproducers.
IN="$FUZZ/out/$TARGET.in"
OUT="$FUZZ/out/$TARGET"
rm -rf "$IN" "$OUT"
mkdir -p "$IN"
for dir in seeds corpus regressions; do
    if [[ -d "$FUZZ/$dir/$TARGET" ]]; then
        find "$FUZZ/$dir/$TARGET" -maxdepth 1 -type f -exec cp -t "$IN" -- {} +
    fi
done
if [[ -z "$(ls -A "$IN")" ]]; then
    echo "no seeds for $TARGET in fuzz/seeds/$TARGET" >&2
    exit 1
fi

# -m: a memory limit (MB), so an allocation sized by the input is a crash, not a swap
# storm. -t: ms per input before it counts as a hang. -V: seconds to run.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
    AFL_NO_AFFINITY=1 AFL_IGNORE_SEED_PROBLEMS=1 AFL_NO_CRASH_README=1
MEM_MB=2048
TIMEOUT_MS=2000
echo "== fuzzing $TARGET for $MINUTES min ($(date -u +%H:%M) UTC)"
nice -n 19 cargo afl fuzz -i "$IN" -o "$OUT" -m "$MEM_MB" -t "$TIMEOUT_MS" \
    -V $((MINUTES * 60)) -- "$BIN" >"$FUZZ/out/$TARGET.log" 2>&1 || {
    echo "afl-fuzz failed; the end of fuzz/out/$TARGET.log:" >&2
    tail -30 "$FUZZ/out/$TARGET.log" >&2
    exit 1
}

echo "== minimising the queue into fuzz/corpus/$TARGET"
NEW="$FUZZ/out/$TARGET.cmin"
rm -rf "$NEW"
# afl-cmin.bash: the Python afl-cmin of AFL++ 4.40c finds no tuples with these
# persistent-mode Rust targets (it keeps 0 files); the shell version works.
AFL_BIN="$(dirname "$(grep -o '/[^ ]*/afl-fuzz' <<<"$(cargo afl fuzz -h 2>&1 || true)" | head -1)")"
nice -n 19 "$AFL_BIN/afl-cmin.bash" -i "$OUT/default/queue" -o "$NEW" -m "$MEM_MB" -t "$TIMEOUT_MS" \
    -- "$BIN" >"$FUZZ/out/$TARGET.cmin.log" 2>&1 || {
    echo "afl-cmin failed; the end of fuzz/out/$TARGET.cmin.log:" >&2
    tail -30 "$FUZZ/out/$TARGET.cmin.log" >&2
    exit 1
}
# afl names files after their queue history; keep the names short and stable.
rm -rf "$FUZZ/corpus/$TARGET"
mkdir -p "$FUZZ/corpus/$TARGET"
for f in "$NEW"/*; do
    cp -- "$f" "$FUZZ/corpus/$TARGET/$(sha1sum "$f" | cut -c1-16)"
done

# Keep the committed corpus small (the replay in `cargo test` must take seconds):
# over FUZZ_CORPUS_KB (450) KB, keep the small files and the large ones that add the
# most coverage per byte (scripts/fuzz_trim.py, from afl-showmap traces).
MAPS="$FUZZ/out/$TARGET.maps"
rm -rf "$MAPS"
AFL_QUIET=1 nice -n 19 "$AFL_BIN/afl-showmap" -i "$FUZZ/corpus/$TARGET" -o "$MAPS" \
    -m "$MEM_MB" -t "$TIMEOUT_MS" -- "$BIN" >/dev/null 2>&1 || true
python3 "$ROOT/scripts/fuzz_trim.py" "$FUZZ/corpus/$TARGET" "$MAPS" $((${FUZZ_CORPUS_KB:-450} * 1000))

STATS="$OUT/default/fuzzer_stats"
stat() { sed -n "s/^$1 *: //p" "$STATS"; }
CRASHES=$(find "$OUT/default/crashes" -type f | wc -l)
HANGS=$(find "$OUT/default/hangs" -type f | wc -l)
echo "== $TARGET: $MINUTES min"
echo "run_time_s       $(stat run_time)"
echo "execs_done       $(stat execs_done)"
echo "execs_per_sec    $(stat execs_per_sec)"
echo "edges_found      $(stat edges_found) of $(stat total_edges)"
echo "bitmap_cvg       $(stat bitmap_cvg)"
echo "queue            $(stat corpus_count)"
echo "saved_crashes    $(stat saved_crashes)  (files: $CRASHES, in fuzz/out/$TARGET/default/crashes)"
echo "saved_hangs      $(stat saved_hangs)  (files: $HANGS, in fuzz/out/$TARGET/default/hangs)"
echo "corpus           $(ls "$FUZZ/corpus/$TARGET" | wc -l) files, $(du -sk "$FUZZ/corpus/$TARGET" | cut -f1) KB ($(cat "$FUZZ/corpus/$TARGET"/* | wc -c) bytes)"
