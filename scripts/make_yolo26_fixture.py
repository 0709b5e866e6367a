"""Make tests/models/data/yolo26n_shapes.pt: a YOLO26n trained by Ultralytics' own trainer, long enough for its two
heads to differ (run in .venv-ultralytics; ~8 min on 2 cores).

Measured on the 32 validation images of the Ultralytics tests' data: one-to-many + NMS mAP50-95 0.515,
end-to-end 0.444, and the checkpoint's own flag names the one-to-many head, as Ultralytics' training leaves it.
The 10 to 25 epochs a test can afford leave YOLO26n at mAP 0, which says nothing about the heads.

    .venv-ultralytics/bin/python scripts/make_yolo26_fixture.py
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeopt.data.synthetic import generate  # noqa: E402

OUT = ROOT / "tests" / "models" / "data" / "yolo26n_shapes.pt"


def main() -> None:
    work = Path(tempfile.mkdtemp())
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(work / "config")
    from ultralytics import YOLO

    data = generate(work / "data", train=64, val=32, seed=0, difficulty="easy")  # the tests' yolo_data
    YOLO("yolo26n.yaml").train(data=str(data), epochs=100, imgsz=160, batch=16, workers=0, device="cpu",
                               project=str(work / "runs"), name="yolo26n", exist_ok=True, plots=False, val=False,
                               amp=False, verbose=False, warmup_epochs=1, cache="ram", close_mosaic=5, seed=0,
                               deterministic=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "runs" / "yolo26n" / "weights" / "last.pt", OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
