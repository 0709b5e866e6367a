"""Load and run an ONNX model with ONNX Runtime (CPU). Needs only numpy and onnxruntime: shipped in bundles."""

from __future__ import annotations

from pathlib import Path


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The session settings used for every measurement (recorded in results)."""
    return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
            "graph_optimization_level": "ORT_ENABLE_ALL", "providers": ["CPUExecutionProvider"]}


def open_model(model, threads: int):
    """``run(batch) -> list of outputs`` for an ONNX model (a path or the bytes of a graph): the one place
    edgeopt builds ONNX Runtime sessions."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch):
        return session.run(None, {name: batch})

    return run


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's model."""
    return open_model(Path(model_dir) / manifest["model_files"][0], threads)
