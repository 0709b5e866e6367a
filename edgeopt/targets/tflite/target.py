"""TFLite / LiteRT target, TensorFlow-free: litert-torch converts the torch module to a float .tflite, and
ai-edge-quantizer writes fp16-weight and full-integer INT8 models from it.

Precisions, exactly:

* ``fp32``: float32 weights and compute;
* ``fp16``: float16-stored weights, dequantized at load, float32 compute;
* ``int8``: static full-integer quantization: int8 per-channel weights and int8 activations calibrated on the
  shared calibration set; the head's final convolutions and the decode stay float (the plan's
  ``keep_head_float``), which keeps scores and boxes exact; model input and output stay float32 (the runner
  accepts raw pixels).

litert-torch's own PT2E int8 path is not used: on a detector head it saturated the class scores (TOOLCHAIN).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.contracts import Capabilities, ExportResult, Target
from edgeopt.errors import ExportError, first_line
from edgeopt.targets.graph import head_tail, kept_float


class _RawPixels:
    """Wrap a detector so the model takes raw uint8 pixels and scales them to [0, 1] itself."""

    def __new__(cls, module):
        import torch

        class RawPixels(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = module

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner(x.to(torch.float32) * (1.0 / 255.0))

        return RawPixels().eval()


def _convert_float(detector, path: Path, layout: str, input_dtype: str = "float32") -> None:
    """torch -> float32 .tflite; NHWC input by wrapping the module with a layout transpose; a uint8 input
    (raw pixels, scaled inside the model) by wrapping it with a cast and a 1/255 multiply."""
    import litert_torch
    import torch

    module = detector.module.eval()
    x = detector.example_input()
    if input_dtype == "uint8":
        module = _RawPixels(module)
        x = torch.zeros(x.shape, dtype=torch.uint8)
    if layout == "NHWC":
        module = litert_torch.to_channel_last_io(module, args=[0]).eval()
        x = x.permute(0, 2, 3, 1).contiguous()
    try:
        with torch.no_grad():
            litert_torch.convert(module, (x,)).export(str(path))
    except Exception as exc:
        raise ExportError(f"litert-torch conversion failed: {exc.__class__.__name__}: {first_line(exc)}") from None


def _ops(model_path: Path) -> tuple[list[dict], list[dict], list[int]]:
    """(ops, tensors, output tensor indices) of a .tflite model, from the interpreter's own view."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    ops = interpreter._get_ops_details()  # the public API has no graph view; this is stable across 2.x
    tensors = interpreter.get_tensor_details()
    outputs = [o["index"] for o in interpreter.get_output_details()]
    return ops, tensors, outputs


def head_tail_tensors(model_path: Path, depth: int = 1) -> list[str]:
    """Output tensor names of the final CONV_2D ops feeding the outputs and of the decode ops after them."""
    ops, tensors, outputs = _ops(model_path)
    names = {t["index"]: t["name"] for t in tensors}
    shapes = {t["index"]: list(t["shape"]) for t in tensors}
    producer = {out: op for op in ops for out in op["outputs"]}

    def kernel(op: dict) -> tuple[int, int, int] | None:  # CONV_2D filters are (out, h, w, in)
        shape = shapes.get(op["inputs"][1]) if len(op["inputs"]) > 1 else None
        return (shape[0], shape[1], shape[2]) if shape is not None and len(shape) == 4 else None

    convs, decode = head_tail((producer[o] for o in outputs if o in producer),
                              parents=lambda op: [producer[i] for i in op["inputs"] if i in producer],
                              is_conv=lambda op: op["op_name"] == "CONV_2D", ident=lambda op: op["index"],
                              kernel=kernel, depth=depth)
    return [names[o] for op in decode + convs for o in op["outputs"]]


def tensor_types(model_path: Path) -> dict[str, int]:
    """How many tensors of each dtype the model holds, and the dtypes of conv weights (for verification)."""
    ops, tensors, _ = _ops(model_path)
    by_index = {t["index"]: t for t in tensors}
    producer = {out: op for op in ops for out in op["outputs"]}
    counts: dict[str, int] = {}
    for t in tensors:
        counts[np.dtype(t["dtype"]).name] = counts.get(np.dtype(t["dtype"]).name, 0) + 1
    conv_weights: dict[str, int] = {}
    for op in ops:
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op["inputs"]) > 1:
            weight = op["inputs"][1]
            source = producer.get(weight)
            if source is not None and source["op_name"] == "DEQUANTIZE":  # stored type of a dequantized weight
                weight = source["inputs"][0]
            name = np.dtype(by_index[weight]["dtype"]).name
            conv_weights[name] = conv_weights.get(name, 0) + 1
    return {"tensors": counts, "conv_weights": conv_weights}


class TFLiteTarget(Target):
    name = "tflite"
    extra = "tflite"
    modules = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")
    device_modules = ("ai_edge_litert", "tflite_runtime")
    device_packages = ("ai-edge-litert",)
    runner = "edgeopt.targets.tflite.runner"
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8"), model_kinds=("torch",), refusals={
        "onnx": "the TFLite conversion (litert-torch) starts from a torch module, not from ONNX"})

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {p: version(p) for p in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert")}

    def export(self, detector, precision: str, plan, calib, out_dir: Path, options: Any) -> ExportResult:
        layout, input_dtype = options.layout, options.input_dtype
        model = out_dir / "model.tflite"
        # inside the export's folder (a cache temporary): a killed run leaves it where the next run cleans
        out_dir.mkdir(parents=True, exist_ok=True)  # callers may name a folder still to make
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=out_dir) as tmp:
            float_path = Path(tmp) / "float.tflite"
            _convert_float(detector, float_path, layout, input_dtype)
            if precision == "fp32":
                float_path.replace(model)
                quantization = None
            elif precision == "fp16":
                quantization = _quantize_fp16(float_path, model)
            else:
                quantization = _quantize_int8(float_path, model, plan, calib, layout, input_dtype)
        quantization = {**(quantization or {"type": "none (float32)"}), "verified_types": tensor_types(model)}
        io = _io_details(model)
        return ExportResult(["model.tflite"], quantization,
                            input={"layout": layout, "dtype": input_dtype,
                                   "scale": 1 / 255.0 if input_dtype == "float32" else 1.0},
                            runtime={"input_tensor": io["input"], "output_tensor": io["output"]})


def _quantizer(float_path: Path):
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(str(float_path))


def _quantize_fp16(float_path: Path, out: Path) -> dict[str, Any]:
    from ai_edge_quantizer import algorithm_manager, qtyping

    q = _quantizer(float_path)
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    try:
        q.quantize().export_model(str(out), overwrite=True)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer fp16 failed: {exc.__class__.__name__}: {exc}") from None
    return {"type": "float16 weights (weight-only float casting), float32 compute", "weights": "float16",
            "activations": "float32"}


def _global_min_max(per_sample: Iterable[dict]) -> dict:
    """Merge one-image calibrations into the extreme min and max of every tensor.

    ``Quantizer.calibrate`` over many samples keeps a moving average of each sample's min/max (smoothing 0.95),
    which clips the largest activations - those of the most confident detections - and moved their scores by
    up to 0.4 on a third-party nano detector; calibrating image by image and merging gives the plain min-max
    the plan asks for.
    """
    merged: dict = {}
    for result in per_sample:
        for name, stats in result.items():
            seen = merged.get(name)
            if not seen or not stats:
                merged[name] = seen or dict(stats)
                continue
            seen["min"] = np.minimum(seen["min"], stats["min"])
            seen["max"] = np.maximum(seen["max"], stats["max"])
    return merged


def _widen_empty_ranges(result: dict) -> dict:
    """Give every calibrated range a non-zero width: a dead ReLU channel or constant tensor calibrates to
    min == max, which yields a zero quantization scale that XNNPACK refuses ("failed to prepare")."""
    for stats in result.values():
        lo, hi = stats.get("min"), stats.get("max")
        if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) and lo.dtype.kind == "f":
            stats["max"] = np.maximum(hi, lo + 1e-4).astype(hi.dtype)
    return result


def _io_details(model_path: Path) -> dict[str, dict[str, Any]]:
    """dtype, scale and zero point of the model's input and output tensors, as stored in the file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))

    def describe(d: dict) -> dict[str, Any]:
        scale, zero = d["quantization"]
        return {"tensor_dtype": np.dtype(d["dtype"]).name, "tensor_scale": float(scale),
                "tensor_zero_point": int(zero), "shape": [int(v) for v in d["shape"]]}

    return {"input": describe(interpreter.get_input_details()[0]),
            "output": describe(interpreter.get_output_details()[0])}


def _quantize_int8(float_path: Path, out: Path, plan, calib, layout: str, input_dtype: str) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, qtyping

    granularity = qtyping.QuantGranularity.CHANNELWISE if plan.per_channel else qtyping.QuantGranularity.TENSORWISE
    interpreter = Interpreter(model_path=str(float_path))
    q = _quantizer(float_path)
    q.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                        weight_num_bits=8, weight_granularity=granularity)
    kept = kept_float(plan, lambda depth: head_tail_tensors(float_path, depth),
                      (t["name"] for t in interpreter.get_tensor_details()))
    if kept:  # later configs win: these ops stay float
        scope = "^(?:" + "|".join(re.escape(n) for n in kept) + ");$"
        q.update_quantization_recipe(regex=scope, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    signature = interpreter.get_signature_list()
    key = next(iter(signature))
    input_name = signature[key]["inputs"][0]
    images = calib.images if layout == "NHWC" else calib.images.transpose(0, 3, 1, 2)  # uint8 pixels
    samples = [{input_name: img[None] if input_dtype == "uint8" else img[None].astype(np.float32) / 255.0}
               for img in images]
    try:
        if plan.method == "minmax":
            result = _global_min_max(q.calibrate({key: [sample]}) for sample in samples)
            calibration = "min-max over all calibration images"
        else:  # ai-edge-quantizer has no entropy/percentile calibration; its own range smoothing clips instead
            result = q.calibrate({key: samples})
            calibration = f"moving-average min-max (ai-edge-quantizer default; no {plan.method} calibration)"
        q.quantize(_widen_empty_ranges(result)).export_model(str(out), overwrite=True)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer int8 failed: {exc.__class__.__name__}: {exc}") from None
    return {"type": "full-integer static int8 (ai-edge-quantizer static_wi8_ai8)", "weights": "int8",
            "activations": "int8", "per_channel": plan.per_channel, "calibration": calibration,
            "calibration_images": len(samples), "kept_float_tensors": kept,
            "input": f"{input_dtype} (quantized inside the model)", "output": "float32"}
