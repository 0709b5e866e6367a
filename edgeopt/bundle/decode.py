"""The numpy output decoder used unchanged for every runtime: score threshold, class-aware NMS, max detections.

Needs only numpy (no torch, no edgeopt imports): deployment bundles ship a copy of this file, so detections on a
device are decoded exactly as during evaluation, and mAP differences between artifacts come from the artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class DecoderConfig:
    """How to read a detector's output and filter it.

    ``layout``: ``dense`` is ``(1, 4 + C, N)``, a box and C class scores per anchor, filtered by class-aware
    NMS here; ``end2end`` is ``(1, K, 6)``, rows of x1, y1, x2, y2, score, class id already ranked by a
    one-to-one (NMS-free) head, so only thresholding is left.
    ``box_format``: ``cxcywh`` or ``xyxy`` (dense only); ``normalized``: boxes are divided by the input size.
    ``multi_label`` lets one anchor yield several classes (used for mAP, as the YOLO family does).
    """

    score_threshold: float = 0.25
    iou_threshold: float = 0.6
    max_detections: int = 100
    box_format: str = "cxcywh"
    normalized: bool = True
    multi_label: bool = False
    max_candidates: int = 3000
    layout: str = "dense"


# decoder settings for mAP: keep low-score boxes so the precision-recall curve is complete
EVAL_DECODER = DecoderConfig(score_threshold=0.001, iou_threshold=0.6, max_detections=300, multi_label=True)


def eval_decoder(decoder: DecoderConfig) -> DecoderConfig:
    """The mAP settings of :data:`EVAL_DECODER` on a model's own decoder (its layout, box format, NMS IoU);
    edgeopt's mAP and a bundle's ``run.py --eval`` on a device both use it."""
    return replace(decoder, score_threshold=EVAL_DECODER.score_threshold, max_detections=EVAL_DECODER.max_detections,
                   multi_label=decoder.layout == "dense")


@dataclass
class Detections:
    """Boxes ``(K, 4)`` x1, y1, x2, y2, scores ``(K,)`` and class ids ``(K,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU between x1y1x2y2 boxes ``(K, 4)`` and ``(M, 4)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(output: np.ndarray, input_size: int, config: DecoderConfig = DecoderConfig()) -> Detections:
    """Decode one image's output (see :class:`DecoderConfig`; batch axis optional) into input-pixel detections."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3:
        out = out[0]
    if config.layout == "end2end":
        return _decode_end2end(out, input_size, config)
    boxes, scores = out[:4].T, out[4:].T  # (N, 4), (N, C)
    if config.normalized:
        boxes = boxes * input_size
    if config.box_format == "cxcywh":
        half = boxes[:, 2:] / 2
        boxes = np.concatenate((boxes[:, :2] - half, boxes[:, :2] + half), 1)
    if config.multi_label:
        idx, cls = np.nonzero(scores > config.score_threshold)
        conf = scores[idx, cls]
    else:
        cls = scores.argmax(1)
        conf = scores[np.arange(len(cls)), cls]
        idx = np.nonzero(conf > config.score_threshold)[0]
        cls, conf = cls[idx], conf[idx]
    if conf.size > config.max_candidates:
        top = np.argsort(-conf, kind="stable")[: config.max_candidates]
        idx, cls, conf = idx[top], cls[top], conf[top]
    cand = boxes[idx]
    # class-aware NMS in one pass: shift each class's boxes to its own region of the plane
    offset = cls[:, None].astype(np.float32) * (4.0 * input_size + 1.0)
    keep = nms(cand + offset, conf, config.iou_threshold)[: config.max_detections]
    return Detections(cand[keep], conf[keep], cls[keep].astype(np.int64))


def _decode_end2end(rows: np.ndarray, input_size: int, config: DecoderConfig) -> Detections:
    """Rows ``(K, 6)`` of x1, y1, x2, y2, score, class: threshold and cap (the head already removed duplicates)."""
    boxes = rows[:, :4] * (input_size if config.normalized else 1.0)
    keep = np.nonzero(rows[:, 4] > config.score_threshold)[0]
    keep = keep[np.argsort(-rows[keep, 4], kind="stable")][: config.max_detections]
    return Detections(boxes[keep], rows[keep, 4], np.rint(rows[keep, 5]).astype(np.int64))
