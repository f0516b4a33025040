#!/usr/bin/env bash
# The README's first command: set up and run the main job.
#
# Today the engine runs natively from the command line (the browser app arrives with
# the WebGPU issue, and this script will then start it with `trunk serve`). It installs
# what is missing (lavapipe, Mesa's CPU Vulkan driver, where no GPU driver is present),
# builds the release binary and runs `roentgen bench` at the half-width 32x32 UNet shape
# (about a minute on a 2-core machine), printing per-stage time, GFLOP/s and GPU memory.
# Pass other bench options to override, e.g. `scripts/start.sh --stages unet --latent 64`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "== no Vulkan driver found: installing lavapipe (mesa-vulkan-drivers)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release --bin roentgen
if [ $# -eq 0 ]; then
    set -- --unet-width-scale 0.5 --latent 32 --stages text,unet,vae --reps 1
fi
exec ./target/release/roentgen bench "$@"
