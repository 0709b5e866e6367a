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
# the core's measured versions (scripts/constraints.txt) but its torch: without them pip's resolver gives up on
# every extra plus ultralytics ("resolution-too-deep" on a clean machine)
grep -v '^torch==' scripts/constraints.txt > "$VENV/constraints.txt"
"${PIP[@]}" -c "$VENV/constraints.txt" -e ".[all,dev,ultralytics]"
