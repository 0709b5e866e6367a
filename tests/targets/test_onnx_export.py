"""The float ONNX is built once per detector (an int8 search re-quantizes it at each step), never served for
another module."""

import copy
from dataclasses import replace

import torch

from edgeopt.targets import onnx_export


def test_consecutive_exports_of_one_detector_build_once_and_another_module_rebuilds(tiny_detector, tmp_path,
                                                                                   monkeypatch):
    builds = []
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: builds.append(1) or real(*a, **k))
    first = onnx_export.export_onnx(tiny_detector, tmp_path / "a.onnx").read_bytes()
    again = onnx_export.export_onnx(tiny_detector, tmp_path / "b.onnx").read_bytes()
    assert again == first and len(builds) == 1

    other = copy.deepcopy(tiny_detector.model)
    with torch.no_grad():
        other.heads[0].cls[-1].bias.add_(1.0)
    changed = replace(tiny_detector, model=other)  # same key, another module: must not get the old graph
    assert onnx_export.export_onnx(changed, tmp_path / "c.onnx").read_bytes() != first and len(builds) == 2
