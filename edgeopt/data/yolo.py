"""Reader of YOLO-format datasets: ``data.yaml`` + ``images/<split>`` + ``labels/<split>``."""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import yaml

from edgeopt.data.dataset import IMAGE_SUFFIXES, DetectionDataset, Sample, image_size
from edgeopt.errors import DataError

# a normalised coordinate may overshoot [0, 1] by this much (rounding in label tools) before it is an error
TOLERANCE = 0.01


def read_data_yaml(path: Path) -> dict:
    """Parse a ``data.yaml`` (safely) and check it names the classes."""
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path} has no 'names' (the class names)", hint="add 'names: [cat, dog, ...]'")
    return data


def parse_names(names: object) -> list[str] | None:
    """Class names given as a list or as an ``{id: name}`` mapping (the YOLO family's two forms), else None."""
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def class_names_of(data: dict) -> list[str]:
    """Class names from a data.yaml ``names`` entry, given as a list or as an ``{id: name}`` mapping."""
    names = parse_names(data["names"])
    if names is not None:
        return names
    raise DataError(f"'names' in data.yaml must be a list or an {{id: name}} mapping, found {data['names']!r}",
                    hint="e.g. names: [cat, dog]")


def _image_files(entry: str | list, root: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        p = (root / str(e)).resolve()
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            files += [(root / line.strip()).resolve() for line in p.read_text().splitlines() if line.strip()]
        else:
            raise DataError(f"dataset split path not found: {p}")
    return files


def label_path(image: Path) -> Path:
    """The YOLO-format convention: the last ``images`` directory in the path becomes ``labels``, suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read ``cls cx cy w h`` lines (normalised) into pixel x1y1x2y2 boxes; errors name the file and line."""
    boxes, classes = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 5 fields 'class cx cy w h', found {len(fields)}: {line.strip()!r}",
                            hint="segmentation polygons are not supported; use box labels")
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise DataError(f"{where}: non-finite coordinate: {line.strip()!r}",
                            hint="coordinates are normalised numbers in [0, 1]")
        if not 0 <= cls < num_classes:
            raise DataError(f"{where}: class id {cls} out of range 0..{num_classes - 1}",
                            hint="check 'names' in data.yaml")
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if w <= 0 or h <= 0 or min(x1, y1) < -TOLERANCE or max(x2, y2) > 1 + TOLERANCE:
            raise DataError(f"{where}: box outside the image or empty (cx={cx}, cy={cy}, w={w}, h={h})",
                            hint="coordinates are normalised to [0, 1]")
        boxes.append([max(x1, 0) * width, max(y1, 0) * height, min(x2, 1) * width, min(y2, 1) * height])
        classes.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def read_yolo(data_yaml: str | Path, split: str = "val") -> DetectionDataset:
    """Read one split of a YOLO dataset; an image without a label file has no objects (the format's convention)."""
    data_yaml = Path(data_yaml)
    if data_yaml.is_dir():
        data_yaml = data_yaml / "data.yaml"
    data = read_data_yaml(data_yaml)
    names = class_names_of(data)
    if split not in data:
        raise DataError(f"{data_yaml} has no '{split}' split", hint=f"splits present: {[k for k in ('train', 'val', 'test') if k in data]}")
    root = data_yaml.parent / str(data.get("path", "."))
    files = _image_files(data[split], root)
    if not files:
        raise DataError(f"no images in the '{split}' split of {data_yaml}")
    samples = []
    labelled = False
    for image in files:
        w, h = image_size(image)
        lp = label_path(image)
        if lp.is_file():
            labelled = True
            boxes, classes = parse_label_file(lp, w, h, len(names))
            samples.append(Sample(image, w, h, boxes, classes))
        else:
            samples.append(Sample(image, w, h))
    return DetectionDataset(samples, names, labelled=labelled, source=f"{data_yaml}:{split}")
