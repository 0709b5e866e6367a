#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest (e.g. -m slow).
# The Ultralytics tests (tests/models/test_ultralytics.py) run in .venv-ultralytics: in CI (CI=true) that
# environment is set up here (bash scripts/setup_ultralytics.sh, ~4 min); elsewhere they run when it exists.
# In the core environment they are skipped (no torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# one file per worker: its module fixtures stay shared; the slowest tests are listed for whoever trims the run
python -m pytest -q -rs --durations=15 -n auto --dist loadfile "$@"
if [ "${CI:-}" = "true" ] || [ -x .venv-ultralytics/bin/python ]; then
    bash scripts/setup_ultralytics.sh
    if [ "${CI:-}" = "true" ]; then
        export EDGEOPT_REQUIRE_ULTRALYTICS=1  # in CI these tests must run, never skip
    fi
    status=0
    # two workers, the tests of each model together (each worker trains only the models it tests)
    .venv-ultralytics/bin/python -m pytest -q -rs --durations=10 -n 2 --dist loadgroup tests/models/test_ultralytics.py "$@" \
        || status=$?
    # exit 5 = no test selected: expected when the arguments select other tests (e.g. -m slow)
    if [ "$status" -ne 0 ] && ! { [ "$status" -eq 5 ] && [ "$#" -gt 0 ]; }; then
        exit "$status"
    fi
fi
