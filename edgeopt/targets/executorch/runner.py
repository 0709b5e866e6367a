"""Load and run an ExecuTorch program (.pte) with ExecuTorch's Python runtime: shipped in bundles.

Needs numpy, executorch and torch: ExecuTorch's Python binding is linked against libtorch and takes and returns
torch tensors (its pip wheels do not list torch, but cannot load without it). The binding module is imported
directly: ``executorch.runtime`` would import the exporter as well (~15 s here, and pandas).
"""

from __future__ import annotations

from pathlib import Path


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The runtime settings used for every measurement (recorded in results)."""
    return {"threadpool_threads": threads, "delegate": "XNNPACK"}


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` for the bundle's program (batch of one, NCHW float32)."""
    import numpy as np
    import torch
    from executorch.extension.pybindings import _C

    _C._unsafe_reset_threadpool(threads)  # before the program loads
    module = _C._load_for_executorch(str(Path(model_dir) / manifest["model_files"][0]))

    def run(batch):
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        # copies: an output tensor may be a view of the program's own buffer, rewritten by the next call
        return [y.numpy().copy() for y in module.forward([x])]

    return run
