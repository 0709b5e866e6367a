"""NCNN target: pnnx converts the traced torch module to ncnn .param/.bin (fp32 weights, or fp16-stored
weights); int8 is calibrated and written by edgeopt itself (:mod:`edgeopt.targets.ncnn.int8`), since no
package in reach ships ncnn2table/ncnn2int8.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.core.contracts import Capabilities, ExportResult, Target
from edgeopt.errors import ExportError, first_line
from edgeopt.targets.ncnn.int8 import table_text, write_int8

IO = {"inputs": ["in0"], "outputs": ["out0"]}  # pnnx's blob names


def convert_with_pnnx(detector, out_dir: Path, fp16: bool) -> tuple[Path, Path]:
    """torch -> TorchScript -> pnnx -> ``model.param`` / ``model.bin`` in ``out_dir``."""
    import pnnx
    import torch

    # inside out_dir (a cache temporary, or a folder in one): a killed run leaves it where the next run cleans
    out_dir.mkdir(parents=True, exist_ok=True)  # callers may name a folder still to make
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=out_dir) as tmp:
        traced = Path(tmp) / "model.pt"
        try:
            with torch.no_grad():
                pnnx.export(detector.module.eval(), str(traced), inputs=detector.example_input(), fp16=fp16)
        except Exception as exc:
            raise ExportError(f"pnnx conversion failed: {exc.__class__.__name__}: {first_line(exc)}") from None
        param, weights = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
        if not param.is_file() or not weights.is_file():
            raise ExportError("pnnx wrote no ncnn model (model.ncnn.param/.bin missing)")
        shutil.move(param, out_dir / "model.param")
        shutil.move(weights, out_dir / "model.bin")
    return out_dir / "model.param", out_dir / "model.bin"


class NcnnTarget(Target):
    name = "ncnn"
    extra = "ncnn"
    modules = ("pnnx", "ncnn")
    device_modules = ("ncnn",)
    device_packages = ("ncnn",)
    runner = "edgeopt.targets.ncnn.runner"
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8"), model_kinds=("torch",), heads=("nms",),
                                refusals={
        # measured with pnnx 20261020 on a one-to-one head: its in-graph top-K + gather fail to convert
        "end2end": "pnnx cannot convert the end-to-end head's in-graph top-K/gather (its generated model_pnnx.py "
                   "fails with SyntaxError), so ncnn runs the one-to-many head with NMS in the decoder",
        # measured: pnnx 20261020 on a 96x96 ONNX detector ran 9+ minutes at 4.5 GB without finishing
        "onnx": "pnnx's ONNX import does not finish on these models here; ncnn export starts from the torch module"})

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"ncnn": version("ncnn"), "pnnx": version("pnnx")}

    def export(self, detector, precision: str, plan, calib, out_dir: Path, options: Any) -> ExportResult:
        files = ["model.param", "model.bin"]
        if precision != "int8":
            convert_with_pnnx(detector, out_dir, fp16=precision == "fp16")
            quantization = None if precision == "fp32" else {"type": "fp16-stored weights, fp32 compute on x86",
                                                             "weights": "float16"}
            return ExportResult(files, quantization, runtime=dict(IO))
        # the plan's method unless the target option names one; ncnn has max and KL (its entropy calibration) only
        method = options.calibration or ("max" if plan.method == "minmax" else "kl")
        out_dir.mkdir(parents=True, exist_ok=True)  # callers may name a folder still to make
        with tempfile.TemporaryDirectory(prefix=".fp32-", dir=out_dir) as tmp:
            param, weights = convert_with_pnnx(detector, Path(tmp), fp16=False)
            fp32_size = weights.stat().st_size
            result = write_int8(param, weights, out_dir / "model.param", out_dir / "model.bin", calib.images,
                                IO["inputs"][0], IO["outputs"], plan, method=method)
        (out_dir / "calibration.table").write_text(table_text(result["table"]))
        quantization = {"type": "ncnn int8 (int8_scale_term), written by edgeopt", "weights": "int8 per output channel",
                        "activations": "int8 per layer input, dequantized at each conv output",
                        "calibration": method, "calibration_images": int(len(calib.images)),
                        "quantized_layers": len(result["quantized_layers"]), "kept_float": result["kept_float"],
                        "bin_bytes_fp32": fp32_size, "bin_bytes_int8": (out_dir / "model.bin").stat().st_size}
        return ExportResult(files, quantization, runtime=dict(IO))
