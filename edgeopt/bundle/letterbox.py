"""Letterbox preprocessing shared by every runtime, and the exact inverse mapping of boxes.

Needs only numpy and Pillow (no torch, no edgeopt imports): deployment bundles ship a copy of it,
so the image a Pi feeds to its runtime is prepared exactly as during calibration and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114  # grey padding, as in the YOLO family


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``width`` x ``height`` was placed into the square model input of side ``size``."""

    size: int
    width: int
    height: int
    scale: float
    pad_x: float
    pad_y: float

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> Letterbox:
        """Scale to fit inside ``size`` keeping the aspect ratio; centre and pad the rest."""
        scale = min(size / width, size / height)
        new_w, new_h = round(width * scale), round(height * scale)
        return cls(size, width, height, scale, (size - new_w) / 2, (size - new_h) / 2)

    @property
    def resized(self) -> tuple[int, int]:
        """Size (w, h) of the image inside the padding."""
        return round(self.width * self.scale), round(self.height * self.scale)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map x1, y1, x2, y2 boxes ``(K, 4)`` from original-image pixels to model-input pixels."""
        out = np.asarray(boxes, dtype=np.float32).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale + self.pad_y
        return out

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_input`, clipped to the original image."""
        out = np.asarray(boxes, dtype=np.float32).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox_image(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a PIL image to ``size`` x ``size``; returns an RGB uint8 HWC array and the mapping."""
    image = image.convert("RGB")
    lb = Letterbox.fit(image.width, image.height, size)
    resized = image.resize(lb.resized, Image.BILINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    left, top = int(round(lb.pad_x - 0.1)), int(round(lb.pad_y - 0.1))
    canvas[top : top + lb.resized[1], left : left + lb.resized[0]] = np.asarray(resized)
    # record the integer offsets actually used so the inverse mapping is exact
    return canvas, Letterbox(size, lb.width, lb.height, lb.scale, float(left), float(top))


def to_tensor(hwc: np.ndarray, layout: str = "NCHW", dtype: str = "float32") -> np.ndarray:
    """Batch of one from an RGB uint8 HWC image: float32 in [0, 1] or raw uint8, NCHW or NHWC."""
    x = hwc[None]
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)
    return x if dtype == "uint8" else x.astype(np.float32) / 255.0


def preprocess(path: str, size: int, layout: str = "NCHW", dtype: str = "float32") -> tuple[np.ndarray, Letterbox]:
    """Read an image file and return the model input batch and its letterbox mapping."""
    with Image.open(path) as image:
        hwc, lb = letterbox_image(image, size)
    return to_tensor(hwc, layout, dtype), lb
