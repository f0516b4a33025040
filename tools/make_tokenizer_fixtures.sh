#!/usr/bin/env bash
# Regenerate the WordPiece (BERT) tokenizer fixtures under tests/fixtures/wordpiece/.
#
# Creates (if missing) a Python venv at .venv-ref/ (git-ignored), installs the pinned
# reference stack from tools/requirements-ref.txt, and runs tools/make_tokenizer_fixtures.py
# (a few seconds; it reads the committed vocab.txt, which tools/make_wordpiece_vocab.py
# writes, and never rewrites it).
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
"$VENV/bin/python" tools/make_tokenizer_fixtures.py "$@"
echo
du -ah tests/fixtures/wordpiece | sort -k2
