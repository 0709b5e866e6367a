"""Row alignment of end-to-end outputs for the parity check."""

import numpy as np

from edgeopt.eval.parity import MIN_ROWS, align_rows, parity
from edgeopt.bundle.decode import DecoderConfig

E2E = DecoderConfig(layout="end2end", box_format="xyxy")


def _rows(n: int, top: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 0.8
    boxes = np.concatenate((xy, xy + 0.1 + rng.random((n, 2)) * 0.1), 1)
    scores = np.sort(rng.random(n) * top)[::-1]
    return np.concatenate((boxes, scores[:, None], rng.integers(0, 6, (n, 1))), 1)[None]


def test_reordered_rows_are_aligned():
    a = _rows(50, 0.9)
    b = a[:, np.random.default_rng(1).permutation(50)]  # same rows, another top-K order
    rows, paired = align_rows(a, b)
    assert len(rows) >= MIN_ROWS and np.array_equal(rows, paired)


def test_low_scoring_model_is_still_compared():
    a = _rows(50, 0.02)  # every score under the floor
    b = a.copy()
    b[0, :, :4] += 0.3  # boxes moved: must not pass as "nothing to compare"
    rows, _ = align_rows(a, b)
    assert len(rows) == MIN_ROWS
    figures = parity(lambda x: a, lambda x: b, np.zeros((1, 3, 8, 8), np.float32), 320, E2E)
    assert figures["box_max_abs"] > 0.29  # the moved boxes are measured
