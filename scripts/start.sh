#!/usr/bin/env bash
# The README's first command: installs what is missing (wasm32 target, Trunk,
# wasm-bindgen-cli; see scripts/setup-web.sh) and serves the app with `trunk serve` at
# http://127.0.0.1:8080 (rebuilding on change). Open it in a browser with WebGPU and
# import a RoentGen folder (diffusers layout); tests/fixtures/tiny-sd is a small one to
# try the page with (random weights: the picture is texture).
#
# `scripts/start.sh native ARGS...` runs the native command line instead, e.g.
#   scripts/start.sh native generate --model /path/to/roentgen --prompt "Right apical pneumothorax."
#   scripts/start.sh native bench --unet-width-scale 0.5 --latent 32
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "native" ]; then
    shift
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
        echo "== no Vulkan driver found: installing lavapipe (mesa-vulkan-drivers)"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mesa-vulkan-drivers >/dev/null
    fi
    export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
    cargo build --release --bin roentgen
    exec ./target/release/roentgen "$@"
fi

./scripts/setup-web.sh
export PATH="$HOME/.cargo/bin:$PATH"
exec trunk serve --release "$@"
