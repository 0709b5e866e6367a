"""edgeopt bundle runner. Usage: python run.py IMAGE [--threads N] [--score S] [--json]
or: python run.py --bench [--profile] (latency and memory; per-operator times)

Needs only numpy, Pillow and the bundle's runtime. The code lives in the ``edgeopt_bundle`` package beside this
file; the model's files are checked against the sha256 in ``edgeopt.json`` before they load.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.dont_write_bytecode = True  # keep the bundle's files exactly as listed in its manifest
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edgeopt_bundle.main import main

    sys.exit(main())
