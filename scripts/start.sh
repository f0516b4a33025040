#!/usr/bin/env bash
# The README's first command: set up and run the app.
#
# Today the engine runs natively from the command line (the browser app arrives with
# the WebGPU issue, and this script will then start it with `trunk serve`). It installs
# what is missing (lavapipe, Mesa's CPU Vulkan driver, where no GPU driver is present),
# builds the release binary, generates an image with the committed tiny reference
# checkpoint (random weights: the picture is texture, the point is the whole path) and
# runs `roentgen bench` at the half-width 32x32 UNet shape (a few minutes on 2 cores).
# With arguments it runs `roentgen` with them instead, e.g.
#   scripts/start.sh generate --model /path/to/roentgen --prompt "Right apical pneumothorax."
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
if [ $# -gt 0 ]; then
    exec ./target/release/roentgen "$@"
fi
./target/release/roentgen generate --model tests/fixtures/tiny-sd --prompt "Small right-sided pleural effusion." \
    --steps 10 --width 128 --height 128 --seed 0 --output target/example.png
exec ./target/release/roentgen bench --unet-width-scale 0.5 --latent 32 --stages text,unet,vae --reps 1
