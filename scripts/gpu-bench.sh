#!/usr/bin/env bash
# The GPU benchmark in one command (issue 23): on a machine with a GPU, every figure
# BENCHMARKS.md lacks, as one Markdown table.
#
#   scripts/gpu-bench.sh [--bin PATH] [--out FILE] [--quick] [--browser]
#
# Needs only the release binary (`cargo build --release`, or --bin pointing at a copy)
# and the Vulkan (or Metal/DX12) loader: no toolchain, no model (random weights at
# RoentGen's full shapes, SD 1.4's configs built into the binary).
#
# Runs, for each weight format (f32, f16, int8, int4) and each kernel path (the
# adapter's own: subgroup kernels where its subgroup size is fixed; and the portable
# kernels, ROENTGEN_NO_SUBGROUPS=1):
#   roentgen bench --stages text,bert,unet,vae     (full size: 512x512, guided batch 2)
# then the f32 UNet call with --profile (per-kernel time, adapter's path), a whole
# generation's peak memory (--stages generate --memory-only, int8), and with --browser
# (needs node, tests/browser/node_modules and a built dist/: scripts/setup-web.sh and
# `trunk build --release`) the browser benchmark, f32 and int8 side by side in one page
# (tests/browser/bench.mjs, the half-width call at 32x32; set CHROME_PATH to a Chrome
# with WebGPU on the GPU, else the harness's Chromium).
# --quick: the half-width UNet (and the VAE) at 16x16 latents, one rep (to try the script on a CPU
# driver in minutes; the figures are then not the full-size ones).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/roentgen"
OUT="gpu-bench-$(date -u +%Y%m%d-%H%M).md"
QUICK=0
BROWSER=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --browser) BROWSER=1; shift ;;
        -h|--help) sed -n 2,25p "$0"; exit 0 ;;
        *) echo "gpu-bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ ! -x "$BIN" ]; then
    echo "gpu-bench.sh: no roentgen binary at $BIN: build it (cargo build --release) or pass --bin PATH" >&2
    exit 2
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

SIZE=(--reps 3 --warmup 1)
[ "$QUICK" = 1 ] && SIZE=(--unet-width-scale 0.5 --latent 16 --reps 1 --warmup 0)
LOG="${OUT%.md}.log"
: >"$LOG"

# `roentgen bench`'s table rows, each prefixed with the path and the format.
rows() { # path format -- bench args...
    local path="$1" format="$2"; shift 3
    local env=()
    [ "$path" = portable ] && env=(ROENTGEN_NO_SUBGROUPS=1)
    echo "== $path $format: roentgen bench $*" >>"$LOG"
    env "${env[@]}" "$BIN" bench "$@" >>"$LOG.tmp" 2>>"$LOG"
    local rc=$?
    cat "$LOG.tmp" >>"$LOG"
    if [ $rc -ne 0 ]; then
        echo "| $path | $format | (failed, exit $rc: see $LOG) | | | | | | | | | |"
    else
        grep '^| ' "$LOG.tmp" | grep -v '^| stage\|^| ---' | sed "s/^| /| $path | $format | /"
    fi
    rm -f "$LOG.tmp"
}

{
    echo "# GPU benchmark ($(date -u +%Y-%m-%d), $(uname -srm))"
    echo
    "$BIN" bench --help >/dev/null 2>&1 || { echo "the binary does not run: $BIN"; exit 1; }
    ADAPTER=$("$BIN" bench --stages text --reps 1 --warmup 0 --unet-width-scale 0.5 --latent 8 2>/dev/null | grep '^adapter:' || true)
    echo "$ADAPTER"
    echo
    [ "$QUICK" = 1 ] && echo "**--quick**: half-width UNet and the VAE at 16x16 latents, one rep; not the full-size figures." && echo
    echo "| kernels | format | stage | median | min | GFLOP/s (our count) | GFLOP/s (PyTorch's count) | weights | peak GPU memory | peak in use | dispatches | host µs / dispatch | recording alone µs / dispatch |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for path in adapter portable; do
        for format in f32 f16 int8 int4; do
            rows "$path" "$format" -- --stages text,bert,unet,vae --format "$format" "${SIZE[@]}"
        done
    done
    echo
    echo "## Per-kernel time, f32 UNet call (adapter's kernels, each dispatch alone)"
    echo
    echo '```'
    "$BIN" bench --stages unet --format f32 --profile "${SIZE[@]}" 2>&1 | grep -A40 'profile (' | head -42
    echo '```'
    echo
    echo "## A whole 512x512 generation's peak memory (int8, --memory-only)"
    echo
    "$BIN" bench --stages generate --format int8 --memory-only 2>&1 | grep '^| ' || echo "(failed: see $LOG)"
    if [ "$BROWSER" = 1 ]; then
        echo
        echo "## In the browser (tests/browser/bench.mjs, f32 and int8 in one page)"
        echo
        if command -v node >/dev/null 2>&1 && [ -f "$ROOT/dist/index.html" ]; then
            (cd "$ROOT" && node tests/browser/bench.mjs --format f32 --format int8 32 2>&1 | tail -20) \
                || echo "(the browser benchmark failed: see above)"
        else
            echo "(skipped: needs node and a built dist/)"
        fi
    fi
} | tee "$OUT"
echo "wrote $OUT (raw output in $LOG)" >&2
