"""Write edgeopt/models/sources/reference/weights/reference.json from a build_reference.sh work directory.

The figures the tests pin (tests/models/test_reference.py) come from here: the evaluation of the built weights on
the 500-image validation set and on the fixed 40-image subset the test regenerates, and the training history.
Usage: python scripts/record_reference.py WORK
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "edgeopt/models/sources/reference/weights/reference.json"


SEED = 1000  # the validation seed of build_reference.sh (training uses seed 0)


def figures(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {"seed": SEED, "images": data["images"], "map50_95": round(data["map50_95"], 4),
            "map50": round(data["map50"], 4),
            **({"per_class": {k: round(v, 4) for k, v in data["per_class"].items()}} if "per_class" in data else {})}


def main(work: Path) -> None:
    history = torch.load(work / "train" / "last.pt", weights_only=True)["history"]
    record = {"description": "Reference detector trained by scripts/build_reference.sh: 4000 synthetic images "
                             "(seed 0), 20 epochs, batch 32; figures written by scripts/record_reference.py",
              "validation_500": figures(work / "eval.json"),
              "fixed_subset": {k: v for k, v in figures(work / "subset.json").items() if k != "per_class"},
              "training_history": history}
    OUT.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
