"""Numerical parity of an artifact against the PyTorch reference on held-out images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edgeopt.bundle.decode import DecoderConfig, Detections, box_iou, decode

DEPLOY_DECODER = DecoderConfig(score_threshold=0.25)
ROW_FLOOR = 0.05  # end-to-end rows below this score are a tail whose order among near-ties is arbitrary
MIN_ROWS = 10  # ... but at least the best rows are compared, so a model scoring low everywhere is still checked
# int8 moves sigmoid scores by a few hundredths; a box scoring 0.26 in torch and 0.24 in the artifact is the same
# detection (measured on a third-party nano detector: such near-threshold flips alone failed box agreement at max abs error 0.035)
SCORE_MARGIN = 0.05


def box_agreement(ref: Detections, got: Detections, threshold: float, margin: float = 0.0,
                  iou: float = 0.5) -> tuple[int, int]:
    """How many detections two sets agree on: (matched, counted).

    Counted are the detections scoring at least ``threshold`` on either side. Reference boxes, best first, each
    take the highest-scoring free box of the same class overlapping them by ``iou`` or more (so a weak duplicate
    that survived NMS does not take the place of the real detection); a pair is a match when one side reaches
    ``threshold`` and the other at least ``threshold - margin``, so a score of 0.26 that comes out 0.24 is the
    same detection, not a lost one and a found one. Pass detections decoded at ``threshold - margin`` or lower.
    """
    floor = threshold - margin
    ref, got = _above(ref, floor), _above(got, floor)
    matched = 0
    ref_free, got_free = np.ones(len(ref), bool), np.ones(len(got), bool)
    if len(ref) and len(got):
        ious = box_iou(ref.boxes, got.boxes)
        for i in np.argsort(-ref.scores, kind="stable"):
            candidates = np.nonzero(got_free & (got.classes == ref.classes[i]) & (ious[i] >= iou))[0]
            if candidates.size == 0:
                continue
            j = candidates[np.argmax(got.scores[candidates])]
            if max(ref.scores[i], got.scores[j]) >= threshold:
                matched += 1
                ref_free[i] = got_free[j] = False
    unmatched = int((ref_free & (ref.scores >= threshold)).sum() + (got_free & (got.scores >= threshold)).sum())
    return matched, matched + unmatched


def _above(d: Detections, floor: float) -> Detections:
    keep = d.scores >= floor
    return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])


def align_rows(a: np.ndarray, b: np.ndarray, floor: float = ROW_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end outputs ``(1, K, 6)``, row-aligned for a numeric comparison.

    The rows are a top-K by score, so near-equal scores may come out in another order (or another row may make
    the cut) in another runtime; that is not an error. Each reference row scoring at least ``floor`` (and at
    least the best ``MIN_ROWS``) is paired with the artifact row of the same class that overlaps it most (a zero
    row if none does); the other rows are left out.
    """
    ref, got = a.reshape(-1, 6), b.reshape(-1, 6)
    order = np.argsort(-ref[:, 4], kind="stable")
    rows = ref[order[: max(int((ref[:, 4] >= floor).sum()), min(MIN_ROWS, len(ref)))]]
    paired = np.zeros_like(rows)
    free = np.ones(len(got), bool)
    for i, row in enumerate(rows):
        same = np.nonzero(free & (np.rint(got[:, 5]) == np.rint(row[5])))[0]
        if same.size:
            j = same[np.argmax(box_iou(row[None, :4], got[same, :4])[0])]
            paired[i], free[j] = got[j], False
    return rows, paired


def parity(reference: Callable[[np.ndarray], np.ndarray], artifact: Callable[[np.ndarray], np.ndarray],
           images: np.ndarray, input_size: int, decoder: DecoderConfig = DEPLOY_DECODER,
           margin: float = SCORE_MARGIN) -> dict[str, float]:
    """Max abs error, cosine similarity of raw outputs, and agreement of decoded boxes over ``images``.

    ``images`` are float32 NCHW [0, 1]; each is run alone (artifacts have a static batch of one). Boxes are
    compared at ``decoder.score_threshold`` with ``margin`` (see ``box_agreement``).
    """
    threshold = decoder.score_threshold
    low = replace(decoder, score_threshold=max(threshold - margin, 0.0))
    max_abs, dots, na, nb = 0.0, 0.0, 0.0, 0.0
    matched = total = 0
    for x in images:
        x = x[None]
        a = np.asarray(reference(x), np.float64)
        b = np.asarray(artifact(x), np.float64).reshape(a.shape)
        if decoder.layout == "end2end":
            a, b = align_rows(a, b)
        max_abs = max(max_abs, float(np.abs(a - b).max(initial=0.0)))
        dots += float((a * b).sum())
        na += float((a * a).sum())
        nb += float((b * b).sum())
        m, t = box_agreement(decode(a, input_size, low), decode(b, input_size, low), threshold, margin)
        matched, total = matched + m, total + t
    return {"max_abs": max_abs, "cosine": dots / max(np.sqrt(na * nb), 1e-12),
            "box_agreement": matched / total if total else 1.0, "boxes_compared": int(total),
            "images": int(len(images))}
