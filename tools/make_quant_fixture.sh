#!/usr/bin/env bash
# Regenerate the quantization fixture: tests/fixtures/tiny-sd-heavy/ and
# tests/fixtures/golden/tiny-sd-heavy.safetensors (f32 and int8/int4 fake-quant goldens).
#
# Same venv as tools/make_fixtures.sh: creates (if missing) .venv-ref/ (git-ignored),
# installs the pinned stack of tools/requirements-ref.txt (first time ~3 min, ~6 GB),
# then runs tools/make_quant_fixture.py (~30 s on 2 cores). Touches no other fixture.
#
# Tests never run this: they only read the committed outputs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV_REF:-$ROOT/.venv-ref}"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
fi
"$VENV/bin/pip" install --disable-pip-version-check -q -r tools/requirements-ref.txt

export PYTHONHASHSEED=0
"$VENV/bin/python" tools/make_quant_fixture.py "$@"
echo
du -ah tests/fixtures/tiny-sd-heavy tests/fixtures/golden/tiny-sd-heavy.safetensors | sort -k2
