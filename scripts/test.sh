#!/usr/bin/env bash
# The test command (README, second command; `.ci/run` calls it). Installs what the
# tests need when it is missing, skips what is there, then runs every test:
#   - lavapipe (Mesa's CPU Vulkan driver) for the native GPU tests,
#   - the wasm32 target, to check that the library builds for the browser.
# No Python: the reference fixtures are committed (tools/make_fixtures.sh remakes them).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    echo "== installing lavapipe (mesa-vulkan-drivers)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"  # silences the Vulkan loader
echo "== native tests (GPU tests on $(ls /usr/share/vulkan/icd.d/ | tr '\n' ' '))"
cargo test --all-targets
echo "== library for wasm32-unknown-unknown"
cargo build --lib --target wasm32-unknown-unknown
echo "== all tests passed"
