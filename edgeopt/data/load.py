"""One entry point that reads any supported dataset format from a path."""

from __future__ import annotations

from pathlib import Path

from edgeopt.data.coco import read_coco
from edgeopt.data.dataset import DetectionDataset
from edgeopt.data.folder import read_image_folder
from edgeopt.data.yolo import read_yolo
from edgeopt.errors import DataError


def read_dataset(path: str | Path, split: str = "val", images: str | Path | None = None) -> DetectionDataset:
    """A COCO json file, a YOLO ``data.yaml`` (or a directory holding one), or a plain image folder."""
    path = Path(path)
    if path.suffix == ".json":
        return read_coco(path, images)
    if path.suffix in (".yaml", ".yml") or (path.is_dir() and (path / "data.yaml").is_file()):
        return read_yolo(path, split)
    if path.is_dir():
        return read_image_folder(path)
    raise DataError(f"dataset not found: {path}",
                    hint="give a YOLO data.yaml (or its directory), a COCO json file or an image folder")
