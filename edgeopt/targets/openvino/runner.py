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


def _compiled(model_dir: Path, manifest: dict, threads: int, perf_count: bool = False):
    import openvino as ov

    options = session_options(threads, manifest)
    options.pop("device")
    if perf_count:
        options["PERF_COUNT"] = True
    return ov.Core().compile_model(str(Path(model_dir) / manifest["model_files"][0]), "CPU", options)


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's IR."""
    compiled = _compiled(model_dir, manifest, threads)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(batch):
        result = request.infer({0: batch})
        return [result[o] for o in outputs]

    return run


# the CPU plugin's kernel names end in the element type they computed in (jit_avx2_I8, brgconv_avx512_f32, ...)
EXEC_PRECISIONS = {"i8": "int8", "u8": "int8", "f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _counters(request) -> dict[str, dict]:
    """The executed nodes' performance counters: the plugin reports each node's mean over every inference so
    far (a running average since the model was compiled)."""
    counters = {}
    for info in request.profiling_info:
        if info.status != info.Status.EXECUTED:  # fused into a neighbour or constant-folded: costs nothing
            continue
        suffix = info.exec_type.rsplit("_", 1)[-1].lower()
        counters[info.node_name] = {"name": info.node_name, "type": info.node_type,
                                    "precision": EXEC_PRECISIONS.get(suffix, suffix),
                                    "ms": info.real_time.total_seconds() * 1000.0, "calls": 1}
    return counters


def profile(model_dir: Path, manifest: dict, threads: int, batch, warmup: int, runs: int) -> list[dict]:
    """Per-node milliseconds per inference from the CPU plugin's performance counters (``PERF_COUNT``), over
    ``runs`` calls after ``warmup``: the counters are running means, so the window's mean is recovered from the
    means before and after it."""
    request = _compiled(model_dir, manifest, threads, perf_count=True).create_infer_request()
    for _ in range(warmup):
        request.infer({0: batch})
    before = _counters(request) if warmup else {}
    for _ in range(runs):
        request.infer({0: batch})
    ops = _counters(request)
    for name, op in ops.items():
        earlier = before.get(name, {}).get("ms", 0.0)
        op["ms"] = max(0.0, (op["ms"] * (warmup + runs) - earlier * warmup) / runs)
    return list(ops.values())
