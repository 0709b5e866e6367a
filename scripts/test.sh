#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest (e.g. -m slow).
# The Ultralytics tests (tests/models/test_ultralytics.py) run in .venv-ultralytics: in CI (CI=true) that
# environment is set up here (bash scripts/setup_ultralytics.sh, ~4 min); elsewhere they run when it exists.
# In the core environment they are skipped (no torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
if [ "${CI:-}" = "true" ] || [ -x .venv-ultralytics/bin/python ]; then
    bash scripts/setup_ultralytics.sh
    .venv-ultralytics/bin/python -m pytest -q tests/models/test_ultralytics.py "$@"
fi
