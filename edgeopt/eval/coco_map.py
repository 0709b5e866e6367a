"""COCO mAP of detections against a dataset's ground truth, computed by faster-coco-eval (or pycocotools)."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from edgeopt.data.coco import to_coco
from edgeopt.data.dataset import DetectionDataset
from edgeopt.errors import DataError, missing_extra
from edgeopt.bundle.decode import Detections


def detections_to_coco(detections: list[Detections]) -> list[dict]:
    """COCO result records; image ids and category ids follow :func:`edgeopt.data.coco.to_coco`."""
    records = []
    for i, det in enumerate(detections):
        for box, score, cls in zip(det.boxes, det.scores, det.classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append({"image_id": i + 1, "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return records


def coco_map(dataset: DetectionDataset, detections: list[Detections], backend: str = "faster") -> dict:
    """mAP50-95, mAP50 and per-class AP50-95 of ``detections`` (original-image pixels, one per sample).

    ``backend`` is ``faster`` (faster-coco-eval) or ``pycocotools``; both give the same figures.
    """
    if not dataset.labelled:
        raise DataError(f"the validation set {dataset.source} has no labels", hint="mAP needs a labelled dataset")
    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} detection lists for {len(dataset)} images")
    gt = to_coco(dataset)
    results = detections_to_coco(detections)
    if backend == "faster":
        try:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        except ImportError:
            raise missing_extra("faster_coco_eval", "dev") from None
    else:
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError:
            raise missing_extra("pycocotools", "dev") from None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not results:
            return {"map50_95": 0.0, "map50": 0.0, "per_class": {n: 0.0 for n in dataset.class_names}}
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = np.asarray(ev.eval["precision"])  # (T, R, K, A, M)
    per_class = {}
    for k, name in enumerate(dataset.class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else float("nan")
    return {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "per_class": per_class}
