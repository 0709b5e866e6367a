"""Numerical parity of an artifact against the PyTorch reference on held-out images.

Scores and boxes are judged apart, because a detector's output mixes them: over a whole dense output the box
channels dominate a cosine (zeroing every class score still scored ~0.99), and a max-abs error over outputs in
[0, 1] cannot exceed 1. Scores: cosine and max abs error over every class score. Boxes: max abs error (in input
sizes) over the anchors the reference detects with. Detections: agreement of decoded boxes, at the deploy
threshold or lower when the reference finds too few boxes there, so a low-scoring model is still compared.
"""

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
LOWEST_THRESHOLD = 0.05  # box agreement is never judged on detections scoring below this
MIN_BOXES = 5


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


def split_output(y: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` and class scores ``(N, C)`` of one image's output (``(1, 4 + C, N)`` dense rows or
    ``(1, K, 6)`` end-to-end rows, whose single score column stands for the row's class)."""
    if layout == "end2end":
        rows = y.reshape(-1, 6)
        return rows[:, :4], rows[:, 4:5]
    dense = y.reshape(y.shape[-2], y.shape[-1])
    return dense[:4].T, dense[4:].T


def pair_outputs(reference: Callable[[np.ndarray], np.ndarray], artifact: Callable[[np.ndarray], np.ndarray],
                 images: np.ndarray, layout: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each image (float32 NCHW [0, 1], run alone: artifacts have a static batch of one) through both sides;
    end-to-end outputs come back row-aligned."""
    pairs = []
    for x in images:
        a = np.asarray(reference(x[None]), np.float64)
        b = np.asarray(artifact(x[None]), np.float64).reshape(a.shape)
        pairs.append(align_rows(a, b) if layout == "end2end" else (a, b))
    return pairs


def agreement_threshold(ref_detections: list[Detections], deploy: float, min_boxes: int) -> float:
    """The score threshold box agreement is judged at: the deploy threshold, or lower (down to
    ``LOWEST_THRESHOLD``) when the reference finds fewer than ``min_boxes`` boxes there, so that a weak or
    briefly trained model is compared on boxes it does find rather than passing on none."""
    scores = np.sort(np.concatenate([d.scores for d in ref_detections] or [np.zeros(0)]))[::-1]
    kth = scores[min(min_boxes, len(scores)) - 1] if len(scores) else 0.0
    return float(np.clip(kth, LOWEST_THRESHOLD, deploy))


def parity(reference: Callable[[np.ndarray], np.ndarray], artifact: Callable[[np.ndarray], np.ndarray],
           images: np.ndarray, input_size: int, decoder: DecoderConfig = DEPLOY_DECODER,
           margin: float = SCORE_MARGIN, min_boxes: int = MIN_BOXES) -> dict[str, float]:
    """Parity figures of ``artifact`` against ``reference`` over ``images``.

    ``score_cosine`` and ``score_max_abs`` over every class score; ``box_max_abs`` over the boxes of anchors
    (rows) the reference scores at least the agreement floor on, in input sizes; ``box_agreement`` of decoded
    detections at ``threshold`` (see ``agreement_threshold``) with a margin scaled to it (see
    ``box_agreement``), and how many detections it counted (``boxes_compared``).
    """
    pairs = pair_outputs(reference, artifact, images, decoder.layout)
    # decoded once, down to the lowest floor agreement may be judged at (the lowest threshold minus its scaled
    # margin); NMS never lets a lower score suppress a higher one, so the detections above are the same
    lowest = replace(decoder, score_threshold=LOWEST_THRESHOLD * (1 - margin / decoder.score_threshold))
    decoded = [(decode(a, input_size, lowest), decode(b, input_size, lowest)) for a, b in pairs]
    threshold = agreement_threshold([ref for ref, _ in decoded], decoder.score_threshold, min_boxes)
    scaled_margin = margin * threshold / decoder.score_threshold
    matched = total = 0
    for ref, got in decoded:
        m, t = box_agreement(ref, got, threshold, scaled_margin)
        matched, total = matched + m, total + t
    return {**_output_errors(pairs, decoder.layout, threshold - scaled_margin),
            "box_agreement": matched / total if total else 0.0, "boxes_compared": int(total),
            "threshold": threshold, "images": int(len(images))}


def _output_errors(pairs: list[tuple[np.ndarray, np.ndarray]], layout: str, floor: float) -> dict[str, float]:
    """Score cosine and max abs error; box max abs error over the anchors the reference detects with (every
    aligned row of an end-to-end output)."""
    dots = ref_norm = got_norm = 0.0
    score_err = box_err = 0.0
    for a, b in pairs:
        ref_boxes, ref_scores = split_output(a, layout)
        got_boxes, got_scores = split_output(b, layout)
        dots += float((ref_scores * got_scores).sum())
        ref_norm += float((ref_scores * ref_scores).sum())
        got_norm += float((got_scores * got_scores).sum())
        score_err = max(score_err, float(np.abs(ref_scores - got_scores).max(initial=0.0)))
        # aligned end-to-end rows were already chosen as the ones that matter (see ``align_rows``)
        detecting = ref_scores.max(axis=1, initial=0.0) >= floor if layout != "end2end" else slice(None)
        box_err = max(box_err, float(np.abs(ref_boxes[detecting] - got_boxes[detecting]).max(initial=0.0)))
    norm = np.sqrt(ref_norm * got_norm)
    cosine = dots / norm if norm > 0 else float(ref_norm == got_norm)
    return {"score_cosine": cosine, "score_max_abs": score_err, "box_max_abs": box_err}
