#!/usr/bin/env bash
# The test command (README, second command; `.ci/run` calls it). Installs what the
# tests need when it is missing, skips what is there, then runs every test:
#   - lavapipe (Mesa's CPU Vulkan driver) for the native GPU tests,
#   - dicom3tools, whose IOD validator `dciodvfy` checks every DICOM we write (the native
#     tests fail without it unless ROENTGEN_SKIP_DCIODVFY=1; the page's test needs it too),
#   - for the browser app (scripts/setup-web.sh): the wasm32 target, Trunk,
#     wasm-bindgen-cli, Debian's Chromium and playwright-core.
# No Python: the reference fixtures are committed (tools/make_fixtures.sh remakes them).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    echo "== installing lavapipe (mesa-vulkan-drivers)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
if ! command -v dciodvfy >/dev/null 2>&1; then
    echo "== installing dicom3tools (dciodvfy, the DICOM validator)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dicom3tools >/dev/null
fi
./scripts/setup-web.sh --browser
export PATH="$HOME/.cargo/bin:$PATH"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"  # silences the Vulkan loader
echo "== native tests (GPU tests on $(ls /usr/share/vulkan/icd.d/ | tr '\n' ' '))"
cargo test --all-targets
echo "== the Hub stand-in for the page's test (tests/browser/hub.test.mjs)"
cargo build --example hub_standin
echo "== browser app: release build (trunk)"
trunk build --release
echo "== browser app in headless Chromium (WebGPU on SwiftShader)"
(cd tests/browser && npm test)
echo "== all tests passed"
