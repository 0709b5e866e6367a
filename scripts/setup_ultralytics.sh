#!/usr/bin/env bash
# Optional set-up for Ultralytics YOLO checkpoints: a second virtual environment, .venv-ultralytics, with edgeopt,
# every runtime and Ultralytics. Ultralytics needs torchvision, and the CPU torch 2.13 wheel edgeopt's core uses has
# no matching torchvision here, so this venv takes torch 2.14.1 + torchvision 0.29.1 from the machine's local
# wheels (a CUDA build that runs on the CPU; ~6 GB, ~4 minutes). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-ultralytics
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP=(python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
# the LiteRT trio is pinned: with ultralytics in the same environment pip's resolver otherwise gives up
# (ai-edge-quantizer 0.10.0 pins ai-edge-litert==2.3.0)
"${PIP[@]}" -e ".[all,dev,ultralytics]" "ai-edge-litert==2.3.0" "ai-edge-quantizer==0.10.0" "litert-torch==0.10.0"
