"""calibrate: the images every quantizer sees, preprocessed exactly as deployed, plus activation statistics.

Stored once (``calibration.npz``: uint8 NHWC letterboxed images, and held-out parity images from the validation
set) and reused by every target, so all int8 artifacts are calibrated on identical tensors.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.config.schema import CalibrateConfig, DatasetConfig
from edgeopt.data.dataset import DetectionDataset, load_image
from edgeopt.data.letterbox import letterbox_image
from edgeopt.data.load import read_dataset
from edgeopt.errors import DataError


@dataclass
class CalibrationSet:
    """Calibration and parity images as uint8 NHWC; ``stats`` maps conv layer names to activation ranges."""

    images: np.ndarray
    parity_images: np.ndarray
    stats: dict[str, dict[str, float]]
    path: Path

    def batches(self, layout: str = "NCHW"):
        """Each calibration image as a float32 [0, 1] batch of one."""
        for img in self.images:
            x = img[None].astype(np.float32) / 255.0
            yield x.transpose(0, 3, 1, 2) if layout == "NCHW" else x

    def float_images(self, which: str = "calibration") -> np.ndarray:
        """All images as float32 NCHW [0, 1]."""
        arr = self.images if which == "calibration" else self.parity_images
        return arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def data_cache_root() -> Path:
    """Where generated synthetic datasets are kept: ``$EDGEOPT_DATA_CACHE`` or ``~/.cache/edgeopt/datasets``."""
    return Path(os.environ.get("EDGEOPT_DATA_CACHE", Path.home() / ".cache" / "edgeopt" / "datasets"))


def open_dataset(cfg: DatasetConfig, synthetic_root: Path | None = None) -> DetectionDataset:
    """Read a configured dataset; ``synthetic`` is generated (deterministically) under ``synthetic_root``."""
    synthetic_root = synthetic_root or data_cache_root()
    if cfg.path == "synthetic":
        from edgeopt.data.synthetic import generate

        n = cfg.images or 200
        root = synthetic_root / f"synthetic-seed{cfg.seed}-n{n}"
        if not (root / "data.yaml").is_file():
            tmp = root.with_name(root.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted generation
            generate(tmp, train=n if cfg.split == "train" else 0, val=n if cfg.split != "train" else 0, seed=cfg.seed)
            tmp.rename(root)
        dataset = read_dataset(root / "data.yaml", split="train" if cfg.split == "train" else "val")
    else:
        dataset = read_dataset(Path(cfg.path), split=cfg.split, images=cfg.images_dir)
    return dataset.subset(cfg.images)


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
              detector, out_dir: Path) -> None:
    """Build the calibration set into ``out_dir`` (a cache directory)."""
    images = _letterboxed(calibration, detector.input_size, cfg.images)
    held_out = validation if validation is not None else calibration
    # parity images come from the end of the validation set, away from anything used for calibration
    parity_samples = DetectionDataset(held_out.samples[-cfg.parity_images:], held_out.class_names)
    parity = _letterboxed(parity_samples, detector.input_size, cfg.parity_images)
    np.savez(out_dir / "calibration.npz", images=images, parity_images=parity)
    # per-layer activation ranges of a torch model (an ONNX source has none: its quantizers calibrate alone)
    stats = activation_stats(detector.module, images) if detector.module is not None else {}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1))


def load_calibration(path: Path) -> CalibrationSet:
    """Open a calibration set written by :func:`calibrate`."""
    with np.load(path / "calibration.npz") as data:
        images, parity = data["images"], data["parity_images"]
    stats = json.loads((path / "stats.json").read_text())
    return CalibrationSet(images, parity, stats, path)
