"""Numerical parity of an artifact against the PyTorch reference on held-out images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeopt.models.decode import DecoderConfig, box_iou, decode

DEPLOY_DECODER = DecoderConfig(score_threshold=0.25)
ROW_FLOOR = 0.05  # end-to-end rows below this score are a tail whose order among near-ties is arbitrary
MIN_ROWS = 10  # ... but at least the best rows are compared, so a model scoring low everywhere is still checked


def box_agreement(ref, got, iou: float = 0.5) -> tuple[int, int]:
    """Greedy one-to-one matches (same class, IoU >= ``iou``) between two detection sets; (matched, max count)."""
    if len(ref) == 0 and len(got) == 0:
        return 0, 0
    if len(ref) == 0 or len(got) == 0:
        return 0, max(len(ref), len(got))
    ious = box_iou(ref.boxes, got.boxes)
    ious[ref.classes[:, None] != got.classes[None, :]] = 0
    matched = 0
    while True:
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[i, j] < iou:
            break
        matched += 1
        ious[i, :] = 0
        ious[:, j] = 0
    return matched, max(len(ref), len(got))


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
           images: np.ndarray, input_size: int, decoder: DecoderConfig = DEPLOY_DECODER) -> dict[str, float]:
    """Max abs error, cosine similarity of raw outputs, and agreement of decoded boxes over ``images``.

    ``images`` are float32 NCHW [0, 1]; each is run alone (artifacts have a static batch of one).
    """
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
        m, t = box_agreement(decode(a, input_size, decoder), decode(b, input_size, decoder))
        matched, total = matched + m, total + t
    return {"max_abs": max_abs, "cosine": dots / max(np.sqrt(na * nb), 1e-12),
            "box_agreement": matched / total if total else 1.0, "images": int(len(images))}
