"""TFLite specifics: what the manifest says each precision is, checked against the tensors in the file."""

import pytest

from edgeopt.config.schema import ParityConfig
from edgeopt.errors import DependencyError
from edgeopt.stages.export import export_bundle
from edgeopt.targets.tflite.options import TFLiteOptions
from edgeopt.core.quant import QuantPlan
from edgeopt.targets import get_target


@pytest.fixture(scope="module")
def tflite():
    target = get_target("tflite")
    try:
        target.check_available()
    except DependencyError as exc:
        pytest.skip(str(exc))
    return target


@pytest.mark.parametrize("precision, layout", [("fp32", "NCHW"), ("fp16", "NHWC"), ("int8", "NHWC")])
def test_manifest_quantization_matches_file(tflite, precision, layout, contract_detector, calib, tmp_path):
    from edgeopt.targets.tflite.target import tensor_types

    manifest = export_bundle(tflite, contract_detector, precision, QuantPlan(), calib, tmp_path, TFLiteOptions(layout=layout),
                             ParityConfig(), {})
    assert manifest.parity["passed"], manifest.parity["problems"]
    assert manifest.input["layout"] == layout
    actual = tensor_types(tmp_path / "model.tflite")
    q = manifest.quantization
    assert q["verified_types"] == actual
    # read the file a second way, with the flatbuffer schema rather than the interpreter edgeopt uses
    assert _conv_weight_types(tmp_path / "model.tflite") == actual["conv_weights"]
    weights = set(actual["conv_weights"])
    if precision == "fp32":
        assert weights == {"float32"} and "int8" not in actual["tensors"]
    elif precision == "fp16":
        assert q["weights"] == "float16" and weights == {"float16"}
    else:
        assert q["weights"] == "int8" and q["activations"] == "int8"
        # every conv stores int8 weights except the head's final convs, which the plan keeps float
        assert actual["conv_weights"].get("int8", 0) > 3 * actual["conv_weights"].get("float32", 0) > 0
        assert actual["tensors"].get("int8", 0) > 20  # int8 activations, not just weights


def test_uint8_input_takes_raw_pixels(tflite, contract_detector, calib, tmp_path):
    import numpy as np

    manifest = export_bundle(tflite, contract_detector, "int8", QuantPlan(), calib, tmp_path,
                             TFLiteOptions(layout="NHWC", input_dtype="uint8"), ParityConfig(), {})
    assert manifest.parity["passed"], manifest.parity["problems"]
    assert manifest.input["dtype"] == "uint8" and manifest.runtime["input_tensor"]["tensor_dtype"] == "uint8"
    assert manifest.runtime["output_tensor"]["tensor_dtype"] == "float32"
    run = tflite.open(tmp_path, manifest.to_dict(), threads=1)
    pixels = calib.parity_images[:1]  # raw uint8 NHWC, as a camera gives them
    from_pixels = run(pixels)[0]
    from_floats = run(calib.float_images("parity")[:1])[0]
    np.testing.assert_allclose(from_pixels, from_floats, atol=1e-6)


def _conv_weight_types(path) -> dict[str, int]:
    """Stored dtypes of the conv weights, from the flatbuffer itself: a weight fed through a DEQUANTIZE op counts
    as the type it is stored in."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    ops = schema.BuiltinOperator
    code = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for graph in model.subgraphs:
        producer = {out: op for op in graph.operators for out in op.outputs}
        for op in graph.operators:
            if code[op.opcodeIndex] not in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
                continue
            weight = op.inputs[1]
            source = producer.get(weight)
            if source is not None and code[source.opcodeIndex] == ops.DEQUANTIZE:
                weight = source.inputs[0]
            name = type_names[graph.tensors[weight].type]
            counts[name] = counts.get(name, 0) + 1
    return counts
