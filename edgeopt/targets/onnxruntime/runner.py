"""Load and run an ONNX model with ONNX Runtime (CPU). Needs only numpy and onnxruntime: shipped in bundles."""

from __future__ import annotations

from pathlib import Path


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The session settings used for every measurement (recorded in results)."""
    return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
            "graph_optimization_level": "ORT_ENABLE_ALL", "providers": ["CPUExecutionProvider"]}


def _session(model, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with the measured settings (profiling into ``profile_prefix`` if given)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


def open_model(model, threads: int):
    """``run(batch) -> list of outputs`` for an ONNX model (a path or the bytes of a graph): the one place
    edgeopt builds ONNX Runtime sessions."""
    session = _session(model, threads)
    name = session.get_inputs()[0].name

    def run(batch):
        return session.run(None, {name: batch})

    return run


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's model."""
    return open_model(Path(model_dir) / manifest["model_files"][0], threads)


QUANTIZE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def _precision(op_type: str, args: dict) -> str:
    """What a kernel computed in, from the element types of its inputs as the profiler recorded them."""
    if op_type in QUANTIZE_OPS:
        return "quantize"
    types = [next(iter(shape)) for shape in args.get("input_type_shape", []) if shape]
    if any(t in ("int8", "uint8") for t in types):
        return "int8"
    if "float16" in types:
        return "fp16"
    return "fp32" if "float" in types else (types[0] if types else "-")


def profile(model_dir: Path, manifest: dict, threads: int, batch, warmup: int, runs: int) -> list[dict]:
    """Per-node milliseconds per inference from ONNX Runtime's session profiler, over ``runs`` calls after
    ``warmup``: each node's kernel events are counted only inside the last ``runs`` ``model_run`` windows."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the trace never lands in the bundle (its files are checksummed)
        session = _session(Path(model_dir) / manifest["model_files"][0], threads, f"{tmp}/ort")
        feed = {session.get_inputs()[0].name: batch}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-runs:]
    ops: dict[str, dict] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        args = event.get("args", {})
        op = ops.setdefault(name[: -len("_kernel_time")], {
            "name": name[: -len("_kernel_time")], "type": args.get("op_name", "?"),
            "precision": _precision(args.get("op_name", ""), args), "ms": 0.0, "calls": 0})
        op["ms"] += event["dur"] / 1000.0
        op["calls"] += 1
    for op in ops.values():
        op["ms"] /= len(windows)
        op["calls"] /= len(windows)
    return list(ops.values())
