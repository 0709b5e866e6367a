"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_config(tmp_path: Path, **changes) -> Path:
    """A small but real pipeline config (reference detector, synthetic data) with top-level changes."""
    import yaml

    cfg = {
        "version": 1,
        "name": "test",
        "output": str(tmp_path / "run"),
        "stages": ["calibrate", "quantize", "export", "benchmark"],
        "model": {"source": "reference", "input_size": 320},
        "data": {
            "calibration": {"path": "synthetic", "split": "train", "seed": 2000, "images": 16},
            "validation": {"path": "synthetic", "split": "val", "seed": 1000, "images": 24},
        },
        "calibrate": {"images": 16, "parity_images": 4},
        "targets": [{"name": "onnxruntime", "precisions": ["fp32", "int8"]}],
        "benchmark": {"warmup": 2, "runs": 50, "threads": 1},
    }
    cfg.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fake_ultralytics_checkpoint(path: Path, model_class: str, monkeypatch) -> None:
    """A pickle referencing ``ultralytics.nn.tasks.<model_class>`` the way real checkpoints do (made without
    Ultralytics: the class lives in a stand-in module only while saving)."""
    import sys
    import types

    import torch

    module = types.ModuleType("ultralytics.nn.tasks")
    cls = type(model_class, (), {"__module__": "ultralytics.nn.tasks"})
    setattr(module, model_class, cls)
    local = pytest.MonkeyPatch()  # its own: undoing it must not undo the caller's settings (the data cache)
    for name in ("ultralytics", "ultralytics.nn"):
        local.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    local.setitem(sys.modules, "ultralytics.nn.tasks", module)
    try:
        torch.save({"model": cls(), "train_args": {"imgsz": 320}}, path)
    finally:
        local.undo()
