"""ONNX Runtime specifics beyond the shared contract: 7-bit weights where its uint8 x int8 kernels saturate."""

import numpy as np
import pytest

from edgeopt.core.quant import QuantPlan
from edgeopt.targets import get_target
from edgeopt.targets.onnxruntime.options import OnnxRuntimeOptions
from edgeopt.targets.onnxruntime.target import u8s8_saturates


def _conv_weight_extremes(path) -> int:
    """The largest |value| among the int8 Conv weights of a QDQ model, read from the file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path / "model.onnx"))
    producer = {out: node for node in model.graph.node for out in node.output}
    init = {t.name: t for t in model.graph.initializer}
    extremes = []
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in init:
            extremes.append(int(np.abs(numpy_helper.to_array(init[dq.input[0]]).astype(np.int32)).max()))
    assert extremes, "no quantized Conv weight found"
    return max(extremes)


@pytest.mark.parametrize("reduce_range, limit", [(True, 64), (False, 127)])
def test_reduce_range_keeps_weights_to_7_bits(reduce_range, limit, tiny_detector, calib, tmp_path):
    out = tmp_path / str(reduce_range)
    out.mkdir()
    result = get_target("onnxruntime").export(tiny_detector, "int8", QuantPlan(), calib, out,
                                              OnnxRuntimeOptions(reduce_range=reduce_range))
    assert result.quantization["weights"] == ("int7 (reduce_range)" if reduce_range else "int8")
    extreme = _conv_weight_extremes(out)
    assert extreme <= limit and (reduce_range or extreme > 64), extreme  # per-channel scales reach the full range


def test_auto_follows_the_cpu(tiny_detector, calib, tmp_path):
    result = get_target("onnxruntime").export(tiny_detector, "int8", QuantPlan(), calib, tmp_path,
                                              OnnxRuntimeOptions())
    assert result.quantization["weights"] == ("int7 (reduce_range)" if u8s8_saturates() else "int8")
    assert get_target("onnxruntime").versions()["int8_u8s8_saturates"] == str(u8s8_saturates())
