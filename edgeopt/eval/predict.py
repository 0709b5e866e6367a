"""Run a model over a dataset through the shared preprocessing and decoder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgeopt.data.dataset import DetectionDataset, load_image
from edgeopt.bundle.letterbox import Letterbox, letterbox_image
from edgeopt.bundle.decode import EVAL_DECODER, DecoderConfig, Detections, decode, eval_decoder
from edgeopt.eval.coco_map import coco_map


def letterboxed(dataset: DetectionDataset, size: int) -> Iterator[tuple[np.ndarray, Letterbox]]:
    """Each image of ``dataset`` as a letterboxed RGB uint8 HWC array with its mapping."""
    for sample in dataset.samples:
        yield letterbox_image(load_image(sample.image), size)


def predict(
    infer: Callable[[np.ndarray], np.ndarray], dataset: DetectionDataset, size: int,
    decoder: DecoderConfig = EVAL_DECODER, batch: int = 1, progress: Callable[[int], None] | None = None,
) -> list[Detections]:
    """Detections in original-image pixels for every sample; ``infer`` maps float NCHW [0,1] to the output."""
    results: list[Detections] = []
    pending: list[tuple[np.ndarray, Letterbox]] = []

    def flush() -> None:
        x = np.stack([hwc for hwc, _ in pending]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        out = infer(x)
        for i, (_, lb) in enumerate(pending):
            det = decode(out[i : i + 1], size, decoder)
            results.append(Detections(lb.to_original(det.boxes), det.scores, det.classes))
            if progress:
                progress(1)
        pending.clear()

    for item in letterboxed(dataset, size):
        pending.append(item)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return results


def validation_map(infer: Callable[[np.ndarray], np.ndarray], validation: DetectionDataset, size: int,
                   decoder: DecoderConfig, batch: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """mAP50-95, mAP50 and per-class figures of ``infer`` on ``validation`` through the model's own decoder
    at the mAP settings."""
    metrics = coco_map(validation, predict(infer, validation, size, eval_decoder(decoder), batch=batch,
                                           progress=progress))
    return {"map50_95": metrics["map50_95"], "map50": metrics["map50"], "per_class": metrics["per_class"]}
