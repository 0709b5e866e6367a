"""OpenVINO target: IR (.xml/.bin) with fp32 or fp16-compressed weights, INT8 by NNCF post-training quantization,
and a bf16 row where the CPU computes in bf16 natively.

The IR is converted from the same static-shape ONNX export as the ONNX Runtime target. INT8 quantizes the
OpenVINO model (not the torch module, which would JIT-compile a C++ extension) with the shared calibration
images; the plan's float-kept part (head convs + decode) becomes NNCF's ignored scope.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.contracts import Capabilities, ExportResult, Target
from edgeopt.errors import ExportError
from edgeopt.targets.graph import head_tail, kept_float
from edgeopt.targets.onnx_export import export_onnx


def cpu_supports_bf16() -> bool:
    """True when the OpenVINO CPU plugin reports native BF16 capability."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def head_tail_names(model, depth: int = 1) -> list[str]:
    """Friendly names of the final Convolutions feeding the outputs and the decode nodes after them."""
    def kernel(node) -> tuple[int, int, int] | None:
        shape = list(node.input_value(1).get_partial_shape().to_shape())
        return (shape[0], shape[2], shape[3]) if len(shape) == 4 else None

    convs, decode = head_tail((r.input_value(0).get_node() for r in model.get_results()),
                              parents=lambda n: [v.get_node() for v in n.input_values()
                                                 if v.get_node().get_type_name() not in ("Constant", "Parameter")],
                              is_conv=lambda n: n.get_type_name() == "Convolution",
                              ident=lambda n: n.get_friendly_name(), kernel=kernel, depth=depth)
    return [n.get_friendly_name() for n in decode + convs]


def _activation_ranges(plan):
    """NNCF's activation range estimator for the plan's calibration method, and its description.

    NNCF's own default averages each image's min/max, which clips the largest activations - those of the most
    confident detections (a third-party nano detector's top scores moved by up to 0.3); ``minmax`` takes the extremes over all
    calibration images, as the other targets do.
    """
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet, StatisticsCollectorParameters,
                                                   StatisticsType)

    if plan.method == "minmax":
        return RangeEstimatorParametersSet.MINMAX, "min-max over all calibration images"
    if plan.method == "percentile":
        prob = 1.0 - plan.percentile / 100.0
        return RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MIN, quantile_outlier_prob=prob),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MAX, quantile_outlier_prob=prob),
        ), f"per-image {plan.percentile} percentile, extremes over the images"
    return RangeEstimatorParametersSet.HISTOGRAM, "histogram (NNCF's error-minimising range for entropy)"


class OpenVinoTarget(Target):
    name = "openvino"
    extra = "openvino"
    modules = ("openvino", "nncf", "onnx", "onnxslim")
    device_modules = ("openvino",)
    device_packages = ("openvino",)
    runner = "edgeopt.targets.openvino.runner"
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8", "bf16"), model_kinds=("torch", "onnx"))

    def precision_unsupported(self, precision: str) -> str | None:
        if precision == "bf16" and not cpu_supports_bf16():
            return "this CPU has no native bf16 in OpenVINO (OPTIMIZATION_CAPABILITIES lacks BF16)"
        return None

    def versions(self) -> dict[str, str]:
        import nncf
        import openvino as ov

        return {"openvino": ov.get_version(), "nncf": nncf.__version__}

    def export(self, detector, precision: str, plan, calib, out_dir: Path, options: Any) -> ExportResult:
        import openvino as ov

        reason = self.precision_unsupported(precision)
        if reason:
            raise ExportError(reason)
        # inside the export's folder (a cache temporary): a killed run leaves it where the next run cleans
        out_dir.mkdir(parents=True, exist_ok=True)  # callers may name a folder still to make
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=out_dir) as tmp:
            onnx_path = export_onnx(detector, Path(tmp) / "model.onnx")
            model = ov.convert_model(str(onnx_path))
        size = detector.input_size
        model.reshape([1, 3, size, size])
        quantization = None
        if precision == "int8":
            model, quantization = self._quantize(model, plan, calib, options)
        try:
            ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=(precision == "fp16"))
        except RuntimeError as exc:
            raise ExportError(f"openvino save_model failed: {exc}") from None
        hint = "bf16" if precision == "bf16" else "f32"
        return ExportResult(["model.xml", "model.bin"], quantization, runtime={"inference_precision": hint})

    @staticmethod
    def _quantize(model, plan, calib, options: Any):
        """NNCF post-training int8 of ``model`` with the plan's float-kept nodes ignored.

        Full bias correction by default (``options.bias_correction``): with NNCF's fast one a third-party nano
        detector of the tests lost 0.51-0.62 pt mAP50-95 at every step of the accuracy search on a CPU with AMX
        int8 (0.38 pt on an AVX2 one), with the full one 0.29 pt at the first step; the other models measured stay
        within 0.5 pt either way. It costs export time only.
        """
        import nncf

        ignored = kept_float(plan, lambda depth: head_tail_names(model, depth),
                             (op.get_friendly_name() for op in model.get_ops()))
        preset_name = options.preset
        presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
        subset = options.subset_size or len(calib.images)
        items = list(calib.batches("NCHW"))
        ranges, calibration = _activation_ranges(plan)
        try:
            quantized = nncf.quantize(model, nncf.Dataset(items, lambda x: np.ascontiguousarray(x)),
                                      preset=presets[preset_name], subset_size=min(subset, len(items)),
                                      fast_bias_correction=options.bias_correction == "fast",
                                      ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                                      advanced_parameters=nncf.AdvancedQuantizationParameters(
                                          activations_range_estimator_params=ranges))
        except Exception as exc:
            raise ExportError(f"nncf.quantize failed: {exc.__class__.__name__}: {exc}") from None
        n_fq = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
        details = {"format": "NNCF FakeQuantize (OpenVINO IR)", "activations": "int8/uint8", "weights": "int8",
                   "per_channel": True, "preset": preset_name, "calibration": calibration,
                   "bias_correction": options.bias_correction,
                   "calibration_images": min(subset, len(items)), "kept_float": ignored, "fake_quantize_nodes": n_fq}
        return quantized, details
