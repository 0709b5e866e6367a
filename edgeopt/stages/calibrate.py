"""calibrate: the images every quantizer sees, preprocessed exactly as deployed, plus activation statistics.

Stored once (``calibration.npz``: uint8 NHWC letterboxed images, and held-out parity images from the validation
set) and reused by every target, so all int8 artifacts are calibrated on identical tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle.letterbox import letterbox_image
from edgeopt.config.schema import CalibrateConfig
from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Stage
from edgeopt.core.quant import CalibrationSet
from edgeopt.data.dataset import DetectionDataset, load_image
from edgeopt.errors import DataError
from edgeopt.models.detector import Detector


def _letterboxed(dataset: DetectionDataset, size: int, n: int) -> np.ndarray:
    if len(dataset) == 0:
        raise DataError(f"no images in {dataset.source}")
    return np.stack([letterbox_image(load_image(s.image), size)[0] for s in dataset.samples[:n]])


def activation_stats(module, images: np.ndarray) -> dict[str, dict[str, float]]:
    """Per convolution output: min, max and the 99.99th percentile of |x| over the calibration images."""
    import torch

    ranges: dict[str, list[np.ndarray]] = {}
    hooks = []
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Conv2d):
            hooks.append(layer.register_forward_hook(
                lambda _m, _i, out, name=name: ranges.setdefault(name, []).append(out.detach().flatten().numpy())))
    try:
        with torch.inference_mode():
            for i in range(0, len(images), 16):
                module(torch.from_numpy(images[i : i + 16].transpose(0, 3, 1, 2).astype(np.float32) / 255.0))
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for name, chunks in ranges.items():
        values = np.concatenate(chunks)
        sample = values[:: max(1, values.size // 2_000_000)]
        stats[name] = {"min": float(values.min()), "max": float(values.max()),
                       "p9999": float(np.percentile(np.abs(sample), 99.99))}
    return stats


def calibrate(cfg: CalibrateConfig, calibration: DetectionDataset, validation: DetectionDataset | None,
              detector: Detector, out_dir: Path) -> None:
    """Build the calibration set into ``out_dir`` (a cache directory)."""
    images = _letterboxed(calibration, detector.input_size, cfg.images)
    held_out = validation if validation is not None else calibration
    # parity images come from the end of the validation set, away from anything used for calibration
    parity_samples = DetectionDataset(held_out.samples[-cfg.parity_images:], held_out.class_names)
    parity = _letterboxed(parity_samples, detector.input_size, cfg.parity_images)
    np.savez(out_dir / "calibration.npz", images=images, parity_images=parity)
    # per-layer activation ranges of a torch model (an ONNX source has none: its quantizers calibrate alone)
    stats = activation_stats(detector.module, images) if detector.kind == "torch" else {}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1))


def load_calibration(path: Path) -> CalibrationSet:
    """Open a calibration set written by :func:`calibrate`."""
    with np.load(path / "calibration.npz") as data:
        images, parity = data["images"], data["parity_images"]
    stats = json.loads((path / "stats.json").read_text())
    return CalibrationSet(images, parity, stats, path)


class CalibrateStage(Stage):
    """Letterbox the calibration and parity images once; every target's quantizer reads the same tensors."""

    name = "calibrate"

    def key(self, ctx: Any, item: Any) -> str:
        config = ctx.config
        return stable_hash("calibrate", config.calibrate.model_dump(), config.data.model_dump(), ctx.detector.key,
                           ctx.data_key, self.code(__name__))

    def run(self, ctx: Any, item: Any, out: Path) -> None:
        with ctx.console.status("calibrate: preprocessing calibration images"):
            calibrate(ctx.config.calibrate, ctx.calibration_set, ctx.validation, ctx.detector, out)

    def load(self, ctx: Any, item: Any, out: Path) -> None:
        ctx.calib = load_calibration(out)
