"""Load and run a .tflite model with LiteRT (``ai_edge_litert``) or, on a Pi that has only it, ``tflite_runtime``.

Needs only numpy and one of the two interpreters: shipped in bundles. XNNPACK is the default CPU delegate of
both. Inputs and outputs that are quantized are converted with the scale/zero point stored in the model.
"""

from __future__ import annotations

from pathlib import Path


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime"


def keep_freed_heap() -> bool:
    """Ask glibc to keep freed heap memory instead of returning it to the OS after every call.

    LiteRT's int8 path allocates and frees ~2 MB of scratch per invoke; with glibc's default top pad the
    memory is trimmed and page-faulted back in on every call (measured here: ~550 page faults per call,
    2.7 ms instead of 1.8 ms for the reference detector). A 64 MB top pad keeps it. No effect elsewhere.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-2, 64 << 20))  # M_TOP_PAD
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


def session_options(threads: int, manifest: dict | None = None) -> dict:
    """The interpreter settings used for every measurement (recorded in results)."""
    return {"num_threads": threads, "delegate": "XNNPACK (default)", "malloc_top_pad_mb": 64}


def load_session(model_dir: Path, manifest: dict, threads: int):
    """Return ``run(batch) -> list of outputs`` (float32, in the NCHW/NHWC layout of the manifest's input)."""
    import numpy as np

    keep_freed_heap()
    interpreter_cls, _ = _interpreter_class()
    interpreter = interpreter_cls(model_path=str(Path(model_dir) / manifest["model_files"][0]), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    outs = interpreter.get_output_details()
    layout = manifest["input"]["layout"]

    def run(batch):
        x = np.asarray(batch)
        if layout == "NHWC" and x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
            x = x.transpose(0, 2, 3, 1)  # callers may hand NCHW; the model wants NHWC
        if inp["dtype"] in (np.uint8, np.int8) and inp["quantization"][0] == 0:
            if x.dtype != np.uint8:  # plain uint8 input = raw pixels; [0, 1] floats back to pixels
                x = np.round(np.clip(x, 0.0, 1.0) * 255.0)
        elif inp["dtype"] in (np.uint8, np.int8):
            scale, zero = inp["quantization"]
            raw_ok = x.dtype == np.uint8 and inp["dtype"] == np.uint8 and abs(scale * 255 - 1) < 1e-6 and zero == 0
            if not raw_ok:  # pixels or [0, 1] floats -> the model's quantized input domain
                xf = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
                x = np.clip(np.round(xf / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        elif x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        # no copy when the batch already has the model's dtype: a fresh 1 MB buffer per call costs page faults
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        interpreter.invoke()
        results = []
        for o in outs:
            y = interpreter.get_tensor(o["index"])
            if o["dtype"] in (np.uint8, np.int8):
                scale, zero = o["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            results.append(y)
        return results

    return run
