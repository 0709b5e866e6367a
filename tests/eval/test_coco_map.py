import numpy as np
import pytest

from edgeopt.data.yolo import read_yolo
from edgeopt.eval.coco_map import coco_map
from edgeopt.bundle.decode import Detections


def _noisy_detections(dataset, seed=0):
    """Jittered ground truth with misses, false positives and wrong classes: a non-trivial mAP case."""
    rng = np.random.default_rng(seed)
    dets = []
    for s in dataset.samples:
        keep = rng.random(len(s.boxes)) > 0.2
        boxes = s.boxes[keep] + rng.normal(0, 2.5, (keep.sum(), 4)).astype(np.float32)
        classes = s.classes[keep].copy()
        flip = rng.random(len(classes)) < 0.1
        classes[flip] = (classes[flip] + 1) % len(dataset.class_names)
        fp = rng.uniform(0, min(s.width, s.height) - 40, (3, 2))
        boxes = np.concatenate([boxes, np.concatenate([fp, fp + 30], 1)]).astype(np.float32)
        classes = np.concatenate([classes, rng.integers(0, len(dataset.class_names), 3)])
        scores = rng.uniform(0.05, 1.0, len(boxes)).astype(np.float32)
        dets.append(Detections(boxes, scores, classes))
    return dets


def test_our_map_equals_pycocotools(synth_dataset):
    ds = read_yolo(synth_dataset, "val")
    dets = _noisy_detections(ds)
    ours = coco_map(ds, dets, backend="faster")
    reference = coco_map(ds, dets, backend="pycocotools")
    assert 0.1 < ours["map50_95"] < 0.9  # non-trivial
    assert ours["map50_95"] == pytest.approx(reference["map50_95"], abs=1e-6)
    assert ours["map50"] == pytest.approx(reference["map50"], abs=1e-6)
    for name in ds.class_names:
        assert ours["per_class"][name] == pytest.approx(reference["per_class"][name], abs=1e-6, nan_ok=True)


def test_perfect_detections_score_one(synth_dataset):
    ds = read_yolo(synth_dataset, "val")
    dets = [Detections(s.boxes, np.ones(len(s.boxes), np.float32), s.classes) for s in ds.samples]
    assert coco_map(ds, dets)["map50_95"] == pytest.approx(1.0)
