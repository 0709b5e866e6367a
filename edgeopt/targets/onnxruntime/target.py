"""ONNX Runtime target: fp32 ONNX, and int8 as static QDQ (per-channel int8 weights, uint8 activations)."""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.contracts import Capabilities, ExportResult, Target
from edgeopt.errors import ExportError
from edgeopt.models.detector import INPUT_NAME
from edgeopt.targets.graph import kept_float
from edgeopt.targets.onnx_export import export_onnx, head_tail_nodes


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    extra = "onnx"
    modules = ("onnx", "onnxruntime", "onnxslim")
    device_modules = ("onnxruntime",)
    device_packages = ("onnxruntime",)
    runner = "edgeopt.targets.onnxruntime.runner"
    capabilities = Capabilities(precisions=("fp32", "int8"), model_kinds=("torch", "onnx"))

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime
        import onnxslim

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "onnxslim": onnxslim.__version__,
                # reduce_range "auto" follows it, so a cached int8 export is keyed by it
                "int8_u8s8_saturates": str(u8s8_saturates())}

    def export(self, detector, precision: str, plan, calib, out_dir: Path, options: Any) -> ExportResult:
        fp32 = export_onnx(detector, out_dir / ("model.onnx" if precision == "fp32" else "model_fp32.onnx"))
        if precision == "fp32":
            return ExportResult(["model.onnx"])
        reduce_range = u8s8_saturates() if options.reduce_range == "auto" else options.reduce_range
        details = quantize_qdq(fp32, out_dir / "model.onnx", plan, calib, reduce_range)
        fp32.unlink()
        return ExportResult(["model.onnx"], details)

    def reference_infer(self, graph: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        """ONNX Runtime on a prepared graph, one image at a time (its batch is static, one)."""
        run = self.runner_module().open_model(graph, threads)

        def infer(x: np.ndarray) -> np.ndarray:
            return np.concatenate([run(np.ascontiguousarray(xi[None], np.float32))[0] for xi in x])

        return infer


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def u8s8_saturates() -> bool:
    """True on an x86-64 CPU without VNNI: there ONNX Runtime's uint8 x int8 kernels (vpmaddubsw) add pairs of
    products in 16 bits, which saturate unless the weights keep to 7 bits (onnxruntime's quantization docs)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # cannot tell: 7-bit weights are safe everywhere
    return not re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags)


def quantize_qdq(src: Path, dst: Path, plan, calib, reduce_range: bool = False) -> dict[str, Any]:
    """Static QDQ quantization with onnxruntime.quantization, fed by the shared calibration images
    (``reduce_range``: 7-bit weights, see :func:`u8s8_saturates`)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src))
    excluded = kept_float(plan, lambda depth: sum(head_tail_nodes(model, depth), []),
                          (n.name for n in model.graph.node))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib.batches("NCHW"))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: np.ascontiguousarray(x)}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[plan.method]
    extra = {"CalibPercentile": plan.percentile} if plan.method == "percentile" else {}
    try:
        with _quiet_root_logger():  # ORT logs advice to the root logger on every call
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=plan.per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, reduce_range=reduce_range, calibrate_method=method,
                            nodes_to_exclude=excluded, extra_options=extra)
    except Exception as exc:
        raise ExportError(f"onnxruntime quantize_static failed: {exc.__class__.__name__}: {exc}") from None
    q = onnx.load(str(dst))
    n_conv = sum(1 for n in q.graph.node if n.op_type == "Conv")
    n_dq = sum(1 for n in q.graph.node if n.op_type == "DequantizeLinear")
    return {"format": "QDQ", "activations": "uint8", "weights": "int7 (reduce_range)" if reduce_range else "int8",
            "per_channel": plan.per_channel,
            "calibration": plan.method, "calibration_images": int(len(calib.images)), "kept_float": excluded,
            "conv_nodes": n_conv, "dequantize_nodes": n_dq}
