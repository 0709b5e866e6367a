#!/usr/bin/env bash
# Set up (if needed) and run the main job: the default pipeline on the embedded reference detector.
# Extra arguments go to `edgeopt run` (e.g. --no-cache, --set benchmark.threads=2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec edgeopt run configs/default.yaml "$@"
