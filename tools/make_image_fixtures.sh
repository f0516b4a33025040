#!/usr/bin/env bash
# Regenerates tests/fixtures/images/ (tools/make_image_fixtures.py) in a small pinned venv
# at .venv-img/ (git-ignored; Pillow, pydicom, numpy, safetensors: ~60 MB, ~20 s).
# Tests never run this: they read the committed outputs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV_IMG:-$ROOT/.venv-img}"
cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --disable-pip-version-check -q -r tools/requirements-img.txt
"$VENV/bin/python" tools/make_image_fixtures.py
du -ah tests/fixtures/images
