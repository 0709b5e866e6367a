"""A plain folder of images without labels, used as calibration data."""

from __future__ import annotations

from pathlib import Path

from edgeopt.data.dataset import DetectionDataset, Sample, image_size, list_images
from edgeopt.errors import DataError


def read_image_folder(folder: str | Path, class_names: list[str] | None = None) -> DetectionDataset:
    """Every image in ``folder`` (sorted); each is checked to be a readable image, naming the bad file."""
    folder = Path(folder)
    samples = []
    for path in list_images(folder):
        try:
            w, h = image_size(path)
        except DataError as exc:
            raise DataError(f"{exc.message} (in calibration folder {folder})",
                            hint="remove non-image files from the folder") from None
        samples.append(Sample(path, w, h))
    return DetectionDataset(samples, list(class_names or []), labelled=False, source=str(folder))
