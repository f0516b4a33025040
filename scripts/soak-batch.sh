#!/usr/bin/env bash
# A long batch run killed and restarted (issue 13, "long runs"; docs/RELIABILITY.md):
# a shard of IMAGES tiny images (the fixture checkpoint, 64x64, 2 steps) is killed three
# times at random moments (SIGKILL twice, SIGINT once), restarted each time, then
# finished; the script checks that the dataset is complete and consistent: every image
# exactly once in the merged manifest, every file's SHA-256 the recorded one, no part
# files left, and the images the same bytes as an uninterrupted run of the first rows.
#   scripts/soak-batch.sh [IMAGES=1000] [OUT=/tmp/roentgen-soak]
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-1000}
OUT=${2:-/tmp/roentgen-soak}
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build --release -q
BIN=target/release/roentgen
rm -rf "$OUT" && mkdir -p "$OUT"
python3 - "$OUT/prompts.csv" "$IMAGES" <<'PY'
import csv, sys
findings = ["Small right-sided pleural effusion.", "Cardiomegaly.", "Mild pulmonary edema.",
            "No acute cardiopulmonary process.", "Left lower lobe consolidation."]
with open(sys.argv[1], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "prompt", "Pleural Effusion", "view"])
    for i in range(int(sys.argv[2])):
        w.writerow([f"s{i:05d}", findings[i % 5], "1" if i % 5 == 0 else "", "PA"])
PY
ARGS=(batch --model tests/fixtures/tiny-sd --prompts "$OUT/prompts.csv"
    --output-dir "$OUT/data" --steps 2 --width 64 --height 64 --seed 3 --batch-size 4)
count() { { cat "$OUT"/data/shard-*.jsonl 2>/dev/null || true; } | wc -l; }
start=$(date +%s)
for kill in KILL INT KILL; do
    "$BIN" "${ARGS[@]}" 2>>"$OUT/log" &   # no function or subshell: $! is roentgen itself
    pid=$!
    target=$(( $(count) + 20 + RANDOM % (IMAGES / 5) ))
    while [ "$(count)" -lt "$target" ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
    kill -$kill $pid 2>/dev/null || true
    wait $pid || true
    echo "killed with SIG$kill at $(count) rows ($(ls "$OUT/data/images" | wc -l) files)" | tee -a "$OUT/report"
done
"$BIN" "${ARGS[@]}" 2>>"$OUT/log"
"$BIN" batch --merge "$OUT/data" 2>>"$OUT/log"
end=$(date +%s)
python3 - "$OUT/data" "$IMAGES" <<'PY' | tee -a "$OUT/report"
import hashlib, json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(os.path.join(out, "metadata.jsonl"))]
ids = [r["id"] for r in rows]
assert len(ids) == n and len(set(ids)) == n, f"{len(ids)} rows, {len(set(ids))} distinct, want {n}"
for r in rows:
    data = open(os.path.join(out, r["file_name"]), "rb").read()
    assert hashlib.sha256(data).hexdigest() == r["sha256"], r["file_name"]
parts = [f for f in os.listdir(os.path.join(out, "images")) if ".part-" in f]
files = [f for f in os.listdir(os.path.join(out, "images")) if f.endswith(".png")]
assert len(files) == n, f"{len(files)} png files"
assert not parts, f"part files left: {parts}"
lines = sum(1 for f in os.listdir(out) if f.startswith("shard-") for _ in open(os.path.join(out, f)))
print(f"complete: {n} images, each once in metadata.jsonl with its SHA-256; "
      f"{lines} manifest lines ({lines - n} superseded rows); {len(parts)} part files left")
PY
# the first rows again, uninterrupted: the same bytes
python3 -c "import sys; l=open('$OUT/prompts.csv').read().splitlines(); open('$OUT/first.csv','w').write('\n'.join(l[:21])+'\n')"
"$BIN" batch --model tests/fixtures/tiny-sd --prompts "$OUT/first.csv" --output-dir "$OUT/check" \
    --steps 2 --width 64 --height 64 --seed 3 2>>"$OUT/log"
for f in "$OUT"/check/images/*.png; do cmp -s "$f" "$OUT/data/images/$(basename "$f")" || { echo "DIFFERS: $f"; exit 1; }; done
echo "the first 20 images are byte-identical to an uninterrupted run; $((end - start)) s in all" | tee -a "$OUT/report"
