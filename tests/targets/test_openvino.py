"""OpenVINO specifics beyond the shared contract."""

import pytest

from edgeopt.core.quant import QuantPlan
from edgeopt.targets import default_options, get_target

pytest.importorskip("nncf")


def test_keep_float_patterns_join_the_ignored_scope(tiny_detector, calib, tmp_path):
    target = get_target("openvino")
    default = target.export(tiny_detector, "int8", QuantPlan(), calib, tmp_path / "a", default_options("openvino")).quantization
    kept = target.export(tiny_detector, "int8", QuantPlan(keep_float=["stem"]), calib, tmp_path / "b",
                         default_options("openvino")).quantization
    extra = set(kept["kept_float"]) - set(default["kept_float"])
    assert extra and all("stem" in name for name in extra)
    assert kept["fake_quantize_nodes"] < default["fake_quantize_nodes"]


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_every_calibration_method_quantizes(method, tiny_detector, calib, tmp_path):
    details = get_target("openvino").export(tiny_detector, "int8", QuantPlan(method=method), calib, tmp_path, default_options("openvino"))
    assert details.quantization["fake_quantize_nodes"] > 0
    assert details.quantization["calibration"].startswith({"percentile": "per-image", "entropy": "histogram"}[method])
