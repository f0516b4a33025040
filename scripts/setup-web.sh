#!/usr/bin/env bash
# Installs what building and testing the browser app needs, skipping what is there:
#   - the wasm32-unknown-unknown target,
#   - Trunk 0.22.0-beta.1 (newer Trunk needs rustc 1.96.1; ~13 min to compile once),
#   - wasm-bindgen-cli at exactly the crate's wasm-bindgen version (Trunk runs it and
#     must not download it: this machine reaches only package registries; ~5 min),
#   - with `--browser`: Debian's Chromium (/usr/bin/chromium) and the test's npm packages
#     (playwright-core, pinned in tests/browser/package-lock.json).
# Sourced by scripts/start.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
if ! trunk --version 2>/dev/null | grep -q '0.22.0-beta.1'; then
    echo "== installing Trunk 0.22.0-beta.1 (compiles for ~13 minutes on 2 cores, once)"
    cargo install --locked trunk@0.22.0-beta.1
fi
WBG=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$WBG"; then
    echo "== installing wasm-bindgen-cli $WBG (the crate's version; ~5 minutes, once)"
    # Without --locked: with it, 0.2.130 fails to resolve webpki-roots (TOOLCHAIN.md).
    cargo install wasm-bindgen-cli --version "$WBG"
fi
# Trunk builds with `cargo --offline` (Trunk.toml): fetch every crate first.
cargo fetch --quiet

if [ "${1:-}" = "--browser" ]; then
    if [ ! -x /usr/bin/chromium ]; then
        echo "== installing Chromium (Debian)"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
    fi
    if [ ! -d tests/browser/node_modules/playwright-core ]; then
        echo "== installing playwright-core (npm)"
        (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi
