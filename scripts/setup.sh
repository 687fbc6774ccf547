#!/usr/bin/env bash
# Sets up a development environment in .venv: CPU torch 2.13.0, the core and every bundled plugin (editable).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# The CPU build first and pinned: an unpinned torch would pull a CUDA build of several GB.
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".[test]" \
    -e plugins/fbgemm -e plugins/qnnpack -e plugins/tensorrt -e plugins/observers_extra
