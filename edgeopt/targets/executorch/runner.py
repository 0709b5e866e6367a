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


# events around the operators rather than operators: the whole program, the delegate call, loading
WRAPPER_EVENTS = frozenset({"Method::execute", "DELEGATE_CALL", "Method::init", "Program::load_method"})


def profile(model_dir: Path, manifest: dict, threads: int, batch, warmup: int, runs: int) -> list[dict]:
    """Per-operator milliseconds per inference from ExecuTorch's event tracer (ETDump, which its wheels record,
    XNNPACK's operators included), read with ``executorch.devtools.Inspector``, over ``runs`` calls after
    ``warmup``."""
    import logging
    import tempfile

    import numpy as np
    import torch
    from executorch.extension.pybindings import _C

    _C._unsafe_reset_threadpool(threads)
    module = _C._load_for_executorch(str(Path(model_dir) / manifest["model_files"][0]), enable_etdump=True,
                                     debug_buffer_size=0)
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    for _ in range(warmup + runs):
        module.forward([x])
    with tempfile.TemporaryDirectory() as tmp:
        module.write_etdump_result_to_file(f"{tmp}/run.etdp")
        logging.disable(logging.WARNING)  # the Inspector warns that no ETRecord (exporter debug info) was given
        try:
            from executorch.devtools import Inspector

            inspector = Inspector(etdump_path=f"{tmp}/run.etdp")
        finally:
            logging.disable(logging.NOTSET)
    ops = []
    for block in inspector.event_blocks:
        for event in block.events:
            if event.name in WRAPPER_EVENTS or event.perf_data is None:
                continue
            timed = list(event.perf_data.raw)[warmup:]  # one figure (ms) per call of the program
            if not timed:
                continue
            # XNNPACK's operators are named "Convolution (NHWC, QC8) IGEMM #3": the type and element type are
            # read from the name on the host (precision None); ExecuTorch's own kernels run in fp32
            delegated = bool(event.is_delegated_op)
            kind = event.name if delegated else (list(event.op_types or []) or [event.name])[0]
            # XNNPACK numbers operators per delegated partition: a name met again is another partition's operator
            ops.append({"name": event.name, "type": kind, "precision": None if delegated else "fp32",
                        "ms": float(sum(timed) / runs), "calls": round(len(timed) / runs)})
    return ops
