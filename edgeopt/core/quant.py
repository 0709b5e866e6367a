"""The values the calibrate and quantize stages hand to every target's quantizer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CalibrationSet:
    """Calibration and parity images as uint8 NHWC; ``stats`` maps conv layer names to activation ranges."""

    images: np.ndarray
    parity_images: np.ndarray
    stats: dict[str, dict[str, float]]
    path: Path

    def batches(self, layout: str = "NCHW") -> Iterator[np.ndarray]:
        """Each calibration image as a float32 [0, 1] batch of one."""
        for img in self.images:
            x = img[None].astype(np.float32) / 255.0
            yield x.transpose(0, 3, 1, 2) if layout == "NCHW" else x

    def float_images(self, which: str = "calibration") -> np.ndarray:
        """All images as float32 NCHW [0, 1]."""
        arr = self.images if which == "calibration" else self.parity_images
        return arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


@dataclass
class QuantPlan:
    """What INT8 means for this run, shared by every target: calibration method, per-channel weights, what stays
    float (the head's tail, and ``keep_float`` regexes over each runtime's own names), the channel multiple
    pruning rounds to, and the layers whose activation range has outliers (reported with the run as advice)."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    keep_head_float: bool = True
    head_float_depth: int = 1  # levels of convolutions from the outputs kept float with the head (see targets/graph)
    keep_float: list[str] = field(default_factory=list)
    channel_multiple: int = 8
    outlier_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        (path / "plan.json").write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> QuantPlan:
        return cls(**json.loads((path / "plan.json").read_text()))
