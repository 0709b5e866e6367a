"""Box agreement: detections that both sides find, with a score margin at the threshold."""

import numpy as np

from edgeopt.eval.parity import box_agreement
from edgeopt.bundle.decode import Detections

BOX = [10.0, 10.0, 50.0, 50.0]
OTHER = [60.0, 60.0, 90.0, 90.0]


def dets(*rows: tuple[list[float], float, int]) -> Detections:
    if not rows:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    return Detections(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def test_a_score_just_across_the_threshold_is_the_same_detection():
    assert box_agreement(dets((BOX, 0.26, 0)), dets((BOX, 0.24, 0)), 0.25, margin=0.05) == (1, 1)
    assert box_agreement(dets((BOX, 0.26, 0)), dets((BOX, 0.24, 0)), 0.25, margin=0.0) == (0, 1)


def test_a_score_that_collapses_is_a_lost_detection():
    assert box_agreement(dets((BOX, 0.50, 0)), dets((BOX, 0.10, 0)), 0.25, margin=0.05) == (0, 1)


def test_below_threshold_on_both_sides_is_not_counted():
    assert box_agreement(dets((BOX, 0.22, 0)), dets((BOX, 0.21, 0)), 0.25, margin=0.05) == (0, 0)
    assert box_agreement(dets(), dets(), 0.25, margin=0.05) == (0, 0)


def test_class_or_place_mismatch_counts_both_sides():
    assert box_agreement(dets((BOX, 0.9, 0)), dets((BOX, 0.9, 1)), 0.25, margin=0.05) == (0, 2)
    assert box_agreement(dets((BOX, 0.9, 0)), dets((OTHER, 0.9, 0)), 0.25, margin=0.05) == (0, 2)


def test_extra_detection_in_the_artifact_counts():
    ref = dets((BOX, 0.9, 0))
    got = dets((BOX, 0.88, 0), (OTHER, 0.6, 2))
    assert box_agreement(ref, got, 0.25, margin=0.05) == (1, 2)


def test_a_weak_duplicate_does_not_take_the_place_of_the_detection():
    near = [11.0, 11.0, 50.0, 50.0]  # overlaps BOX even more closely than the real detection does
    ref = dets((BOX, 0.36, 0))
    got = dets(([13.0, 13.0, 52.0, 52.0], 0.37, 0), (near, 0.22, 0))
    assert box_agreement(ref, got, 0.25, margin=0.05) == (1, 1)
