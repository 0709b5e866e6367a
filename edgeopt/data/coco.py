"""COCO json: reading a labelled dataset, and writing ground truth / detections for COCO evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgeopt.data.dataset import DetectionDataset, Sample, image_size
from edgeopt.errors import DataError


def _bbox(ann: dict, annotations: Path) -> tuple[float, float, float, float]:
    """An annotation's ``[x, y, w, h]``: four finite numbers, else a DataError naming the annotation."""
    box = ann.get("bbox")
    ok = isinstance(box, list) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    if not ok:
        raise DataError(f"{annotations}: annotation {ann.get('id')} has bbox {box!r}; expected [x, y, w, h] numbers")
    return float(box[0]), float(box[1]), float(box[2]), float(box[3])


def read_coco(annotations: str | Path, images_dir: str | Path | None = None) -> DetectionDataset:
    """Read a COCO ``instances`` json; categories are renumbered 0..C-1 in order of their ids."""
    annotations = Path(annotations)
    if not annotations.is_file():
        raise DataError(f"COCO annotation file not found: {annotations}")
    try:
        coco = json.loads(annotations.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{annotations} is not valid JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise DataError(f"{annotations} has no '{key}' list (not a COCO instances file)")
    root = Path(images_dir) if images_dir else annotations.parent
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for img in coco["images"]:
        path = root / img["file_name"]
        w, h = img.get("width"), img.get("height")
        if not w or not h:
            w, h = image_size(path)
        elif not path.is_file():
            raise DataError(f"image not found: {path} (listed in {annotations})")
        boxes, classes = [], []
        for ann in per_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                continue
            if ann["category_id"] not in index:
                raise DataError(f"{annotations}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            x, y, bw, bh = _bbox(ann, annotations)
            if bw <= 0 or bh <= 0 or x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                raise DataError(f"{annotations}: annotation {ann.get('id')} box {ann['bbox']} outside image {path.name} ({w}x{h})")
            boxes.append([x, y, x + bw, y + bh])
            classes.append(index[ann["category_id"]])
        samples.append(Sample(path, int(w), int(h), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)))
    if not samples:
        raise DataError(f"{annotations} lists no images")
    return DetectionDataset(samples, [c["name"] for c in cats], labelled=True, source=str(annotations))


def to_coco(dataset: DetectionDataset) -> dict:
    """Ground truth of ``dataset`` as a COCO dict (image ids = sample index + 1, category ids = class + 1)."""
    images, anns = [], []
    for i, s in enumerate(dataset.samples):
        images.append({"id": i + 1, "file_name": s.image.name, "width": s.width, "height": s.height})
        for box, cls in zip(s.boxes, s.classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def write_coco(dataset: DetectionDataset, path: str | Path) -> Path:
    """Write the ground truth of ``dataset`` as a COCO json file next to nothing else; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(to_coco(dataset)))
    return path
