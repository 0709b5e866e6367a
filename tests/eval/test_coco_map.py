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


def test_map_matches_a_hand_computed_case(tmp_path):
    """Two images, one box each. Detections ranked 0.9 (hit), 0.8 (miss), 0.7 (hit): precision 1, 1/2, 2/3 at
    recall 1/2, 1/2, 1. COCO interpolates precision as the best at any higher recall and averages 101 recall
    points: 51 points (recall 0..0.50) at 1 and 50 (0.51..1) at 2/3, so AP = (51 + 50 * 2/3) / 101 at every IoU
    threshold (the hits are exact)."""
    from edgeopt.data.dataset import DetectionDataset, Sample

    box = np.array([[10, 10, 50, 50]], np.float32)
    ds = DetectionDataset([Sample(tmp_path / f"{i}.jpg", 100, 100, box.copy(), np.array([0])) for i in range(2)],
                          ["thing"])
    dets = [Detections(box.copy(), np.array([0.9], np.float32), np.array([0])),
            Detections(np.array([[60, 60, 90, 90], [10, 10, 50, 50]], np.float32), np.array([0.8, 0.7], np.float32),
                       np.array([0, 0]))]
    expected = (51 + 50 * 2 / 3) / 101
    for backend in ("faster", "pycocotools"):
        metrics = coco_map(ds, dets, backend=backend)
        assert metrics["map50_95"] == pytest.approx(expected, abs=1e-6)
        assert metrics["map50"] == pytest.approx(expected, abs=1e-6)
