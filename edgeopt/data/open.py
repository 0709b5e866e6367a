"""Open a configured dataset (a path, or ``synthetic``: generated once, deterministically, then cached)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.core.cache import atomic_write
from edgeopt.data.dataset import DetectionDataset
from edgeopt.data.load import read_dataset

if TYPE_CHECKING:
    from edgeopt.config.schema import DatasetConfig


def data_cache_root() -> Path:
    """Where generated synthetic datasets are kept: ``$EDGEOPT_DATA_CACHE`` or ``~/.cache/edgeopt/datasets``."""
    return Path(os.environ.get("EDGEOPT_DATA_CACHE", Path.home() / ".cache" / "edgeopt" / "datasets"))


def open_dataset(cfg: DatasetConfig, synthetic_root: Path | None = None) -> DetectionDataset:
    """Read a configured dataset; ``synthetic`` is generated (deterministically) under ``synthetic_root``."""
    synthetic_root = synthetic_root or data_cache_root()
    if cfg.path == "synthetic":
        from edgeopt.data.synthetic import generate

        n = cfg.images or 200
        split = "train" if cfg.split == "train" else "val"
        root = synthetic_root / f"synthetic-{split}-seed{cfg.seed}-n{n}"  # a folder holds one split
        if not (root / "data.yaml").is_file():
            root.parent.mkdir(parents=True, exist_ok=True)
            # keep_existing: another run may have generated the same (identical) dataset meanwhile, and be reading it
            atomic_write(root, lambda tmp: generate(tmp, train=n if split == "train" else 0,
                                                    val=n if split == "val" else 0, seed=cfg.seed), keep_existing=True)
        dataset = read_dataset(root / "data.yaml", split=split)
    else:
        dataset = read_dataset(Path(cfg.path), split=cfg.split, images=cfg.images_dir)
    return dataset.subset(cfg.images)
