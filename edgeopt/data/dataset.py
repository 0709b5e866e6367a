"""The in-memory description of a detection dataset, whatever format it was read from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeopt.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Sample:
    """One image and its ground truth: boxes ``(K, 4)`` x1, y1, x2, y2 in pixels and class ids ``(K,)``."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


@dataclass
class DetectionDataset:
    """A list of samples with class names; ``labelled`` is False for plain image folders."""

    samples: list[Sample]
    class_names: list[str]
    labelled: bool = True
    source: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> str:
        """A hash of what the dataset holds: every image's path, size in bytes and modification time, and the
        ground truth in full (boxes, classes, names), so an edited image or label changes it."""
        h = hashlib.sha256(json.dumps([self.class_names, self.labelled]).encode())
        for s in self.samples:
            try:
                stat = s.image.stat()
                h.update(f"{s.image}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"{s.image}\0missing\0".encode())
            h.update(np.ascontiguousarray(s.boxes, np.float32).tobytes())
            h.update(np.ascontiguousarray(s.classes, np.int64).tobytes())
        return h.hexdigest()[:16]

    def subset(self, n: int | None) -> DetectionDataset:
        """The first ``n`` samples (all if ``n`` is None)."""
        samples = self.samples if n is None else self.samples[:n]
        return DetectionDataset(samples, self.class_names, self.labelled, self.source)


def image_size(path: Path) -> tuple[int, int]:
    """Width and height from the image header; a clear error for a missing or unreadable image."""
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"not a readable image: {path} ({exc.__class__.__name__})") from None


def load_image(path: Path) -> Image.Image:
    """Fully decode an image as RGB; a truncated or corrupt file raises a ``DataError`` naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"corrupt or unreadable image: {path} ({exc})") from None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted; errors if the folder is missing or holds none."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    return files
