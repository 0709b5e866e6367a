#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with the CPU build of torch and edgeopt.
# Installing torch==2.13.0 first matters: it is the local CPU wheel, and it satisfies edgeopt's torch range,
# so pip never fetches a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${EDGEOPT_EXTRAS:-all,dev}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]"
