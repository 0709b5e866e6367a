"""Load and run an OpenVINO IR on the CPU. Needs only numpy and openvino: shipped in bundles.

The inference precision hint is explicit (the CPU plugin would otherwise run "fp32" models in bf16 on CPUs
that support it): ``f32`` for fp32/fp16/int8 bundles, ``bf16`` only for a bundle exported as bf16.
"""

from __future__ import annotations

from pathlib import Path


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The compile settings used for every measurement (recorded in results)."""
    hint = (manifest or {}).get("runtime", {}).get("inference_precision", "f32")
    return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "device": "CPU"}


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's IR."""
    import openvino as ov

    options = session_options(threads, manifest)
    options.pop("device")
    core = ov.Core()
    compiled = core.compile_model(str(Path(model_dir) / manifest["model_files"][0]), "CPU", options)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(batch):
        result = request.infer({0: batch})
        return [result[o] for o in outputs]

    return run
