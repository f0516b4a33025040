#!/usr/bin/env bash
# Regenerate the workbench goldens (image-to-image, inpainting, attention maps).
#
# Creates (if missing) a Python venv at .venv-ref/ (git-ignored), installs the pinned
# reference stack from tools/requirements-ref.txt, and runs tools/make_fixtures.py.
# The first install downloads ~6 GB (torch brings CUDA wheels even without a GPU) and
# takes ~3 minutes; the generation itself takes ~20 s on 2 CPU cores.
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
"$VENV/bin/python" tools/make_workbench_fixtures.py "$@"
echo
du -sh tests/fixtures
du -ah tests/fixtures | sort -k2
