#!/usr/bin/env bash
# Regenerate the RadEdit fixtures (tests/fixtures/tiny-radedit, bert-plain, radedit/ and
# golden/tiny-radedit.safetensors): see tools/make_radedit_fixtures.py.
#
# Needs the pinned reference venv (.venv-ref/, tools/requirements-ref.txt, created here
# if missing) and a checkout of github.com/inbarhub/DDPM_inversion at the pinned commit
# in .ddpm-inversion/ (git-ignored; cloned here if missing, or pass DDPM_INVERSION_DIR).
# Tests never run this: they only read the committed outputs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV_REF:-$ROOT/.venv-ref}"
COMMIT=58fc881772d34f0c24be9e34725d213731aa009d
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
fi
"$VENV/bin/pip" install --disable-pip-version-check -q -r tools/requirements-ref.txt

if [ -z "${DDPM_INVERSION_DIR:-}" ]; then
    DDPM_INVERSION_DIR="$ROOT/.ddpm-inversion"
    if [ ! -d "$DDPM_INVERSION_DIR" ]; then
        git clone -q https://github.com/inbarhub/DDPM_inversion "$DDPM_INVERSION_DIR"
    fi
    git -C "$DDPM_INVERSION_DIR" checkout -q "$COMMIT"
fi
test "$(git -C "$DDPM_INVERSION_DIR" rev-parse HEAD)" = "$COMMIT" || {
    echo "$DDPM_INVERSION_DIR is not at $COMMIT" >&2; exit 1; }
export DDPM_INVERSION_DIR

python3 tools/make_wordpiece_vocab.py
export PYTHONHASHSEED=0
"$VENV/bin/python" tools/make_radedit_fixtures.py "$@"
du -sh tests/fixtures/tiny-radedit tests/fixtures/bert-plain tests/fixtures/golden/tiny-radedit.safetensors
