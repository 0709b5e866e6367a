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


# --- per-operator profile --------------------------------------------------------------------------------------
# LiteRT's Python API (Interpreter, CompiledModel) exposes no profiler; its C API in the wheel's libLiteRt.so does
# (LiteRtCompiledModelGetProfiler), and a CompiledModel compiled with ``enable_profiling`` has XNNPACK record each of
# its operators. Called through ctypes; struct layouts and signatures from litert/c/*.h of LiteRT 2.x.
PROFILED_OPERATOR, DELEGATE_PROFILED_OPERATOR, RUN_EVENT = 2, 8, "LiteRT::Run[buffer registration]"


def _c_api():
    """libLiteRt.so from ai_edge_litert with the signatures used here; NotImplementedError where it is absent."""
    import ctypes as C
    import os

    try:
        import ai_edge_litert
    except ImportError:
        raise NotImplementedError("tflite_runtime has no per-operator profiler in Python (ai-edge-litert, through "
                                  "its C API, has one)") from None
    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.exists(path):
        raise NotImplementedError(f"this LiteRT ({path} absent) offers no per-operator profiler to Python")
    lib = C.CDLL(path)
    p, n = C.c_void_p, C.c_size_t
    signatures = {
        "LiteRtCreateEnvironment": [C.c_int, p, C.POINTER(p)],
        "LiteRtCreateModelFromFile": [p, C.c_char_p, C.POINTER(p)],
        "LiteRtCreateOptions": [C.POINTER(p)], "LiteRtSetOptionsHardwareAccelerators": [p, C.c_int],
        "LiteRtCreateOpaqueOptions": [C.c_char_p, p, p, C.POINTER(p)], "LiteRtAddOpaqueOptions": [p, p],
        "LiteRtCreateCompiledModel": [p, p, p, C.POINTER(p)], "LiteRtCompiledModelGetProfiler": [p, C.POINTER(p)],
        "LiteRtGetModelSignature": [p, n, C.POINTER(p)], "LiteRtGetNumSignatureInputs": [p, C.POINTER(n)],
        "LiteRtGetNumSignatureOutputs": [p, C.POINTER(n)], "LiteRtGetSignatureInputTensorByIndex": [p, n, C.POINTER(p)],
        "LiteRtGetSignatureOutputTensorByIndex": [p, n, C.POINTER(p)], "LiteRtGetRankedTensorType": [p, p],
        "LiteRtGetCompiledModelInputBufferRequirements": [p, n, n, C.POINTER(p)],
        "LiteRtGetCompiledModelOutputBufferRequirements": [p, n, n, C.POINTER(p)],
        "LiteRtCreateManagedTensorBufferFromRequirements": [p, p, p, C.POINTER(p)],
        "LiteRtLockTensorBuffer": [p, C.POINTER(p), C.c_int], "LiteRtUnlockTensorBuffer": [p],
        "LiteRtRunCompiledModel": [p, n, n, p, n, p], "LiteRtStartProfiler": [p], "LiteRtStopProfiler": [p],
        "LiteRtGetNumProfilerEvents": [p, C.POINTER(C.c_int)], "LiteRtGetProfilerEvents": [p, C.c_int, p],
        "LiteRtDestroyTensorBuffer": [p], "LiteRtDestroyCompiledModel": [p], "LiteRtDestroyOptions": [p],
        "LiteRtDestroyModel": [p], "LiteRtDestroyEnvironment": [p],
    }
    try:
        for name, argtypes in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, (None if "Destroy" in name else C.c_int)
    except AttributeError as exc:
        raise NotImplementedError(f"this LiteRT's C API lacks what its profile needs: {exc}") from None
    return lib


def _event_struct():
    import ctypes as C

    usage = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]
    memory = type("LiteRtMemoryUsage", (C.Structure,), {"_fields_": usage})
    fields = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
              ("begin_memory", memory), ("end_memory", memory), ("metadata1", C.c_uint64), ("metadata2", C.c_uint64),
              ("source", C.c_int)]
    return type("ProfiledEventData", (C.Structure,), {"_fields_": fields})


def _profiled_events(model_file: str, threads: int, batch, warmup: int, runs: int) -> list[tuple]:
    """(tag, type, microseconds, metadata1) of every event of ``runs`` profiled runs of a CompiledModel (CPU,
    XNNPACK at ``threads``) fed ``batch`` (already in the model's input type), after ``warmup`` runs."""
    import ctypes as C

    import numpy as np

    lib, libc, p = _c_api(), C.CDLL(None), C.c_void_p
    libc.strdup.restype, libc.strdup.argtypes = p, [C.c_char_p]

    def check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT's {what} failed (status {status})")

    env, model, options, compiled, profiler, buffers = p(), p(), p(), p(), p(), []
    try:
        check(lib.LiteRtCreateEnvironment(0, None, C.byref(env)), "environment")
        check(lib.LiteRtCreateModelFromFile(env, model_file.encode(), C.byref(model)), "model load")
        check(lib.LiteRtCreateOptions(C.byref(options)), "options")
        check(lib.LiteRtSetOptionsHardwareAccelerators(options, 1), "CPU accelerator")  # kLiteRtHwAcceleratorCpu
        for identifier, toml in (("runtime_options_string", "enable_profiling = true\n"),
                                 ("xnnpack", f"num_threads = {int(threads)}\n")):
            opaque = p()  # the options own the payload and free it with free()
            check(lib.LiteRtCreateOpaqueOptions(identifier.encode(), libc.strdup(toml.encode()),
                                                C.cast(libc.free, p), C.byref(opaque)), identifier)
            check(lib.LiteRtAddOpaqueOptions(options, opaque), identifier)
        check(lib.LiteRtCreateCompiledModel(env, model, options, C.byref(compiled)), "compilation")
        check(lib.LiteRtCompiledModelGetProfiler(compiled, C.byref(profiler)), "profiler")  # owned by the model
        signature, counts = p(), (C.c_size_t(), C.c_size_t())
        check(lib.LiteRtGetModelSignature(model, 0, C.byref(signature)), "signature")
        check(lib.LiteRtGetNumSignatureInputs(signature, C.byref(counts[0])), "inputs")
        check(lib.LiteRtGetNumSignatureOutputs(signature, C.byref(counts[1])), "outputs")
        for is_input, count in ((True, counts[0].value), (False, counts[1].value)):
            for index in range(count):
                tensor, requirements, buffer = p(), p(), p()
                tensor_type = (C.c_uint8 * 128)()  # LiteRtRankedTensorType (72 bytes), opaque here
                get = (lib.LiteRtGetSignatureInputTensorByIndex if is_input
                       else lib.LiteRtGetSignatureOutputTensorByIndex)
                check(get(signature, index, C.byref(tensor)), "tensor")
                check(lib.LiteRtGetRankedTensorType(tensor, tensor_type), "tensor type")
                get = (lib.LiteRtGetCompiledModelInputBufferRequirements if is_input
                       else lib.LiteRtGetCompiledModelOutputBufferRequirements)
                check(get(compiled, 0, index, C.byref(requirements)), "buffer requirements")
                check(lib.LiteRtCreateManagedTensorBufferFromRequirements(env, tensor_type, requirements,
                                                                          C.byref(buffer)), "buffer")
                buffers.append((is_input, buffer))
        data = np.ascontiguousarray(batch)
        pointer = p()
        check(lib.LiteRtLockTensorBuffer(buffers[0][1], C.byref(pointer), 1), "input write")  # 1: write
        C.memmove(pointer, data.ctypes.data, data.nbytes)
        check(lib.LiteRtUnlockTensorBuffer(buffers[0][1]), "input write")
        inputs = (p * counts[0].value)(*[b.value for is_in, b in buffers if is_in])
        outputs = (p * counts[1].value)(*[b.value for is_in, b in buffers if not is_in])

        def run() -> None:
            check(lib.LiteRtRunCompiledModel(compiled, 0, counts[0].value, inputs, counts[1].value, outputs), "run")

        for _ in range(warmup):
            run()
        check(lib.LiteRtStartProfiler(profiler), "profiler start")  # starting also clears earlier events
        for _ in range(runs):
            run()
        check(lib.LiteRtStopProfiler(profiler), "profiler stop")
        total = C.c_int()
        check(lib.LiteRtGetNumProfilerEvents(profiler, C.byref(total)), "profile")
        events = (_event_struct() * total.value)()
        check(lib.LiteRtGetProfilerEvents(profiler, total.value, events), "profile")
        # the tags live in the profiler's buffer: copied out (decoded) before the model is destroyed
        return [((e.tag or b"").decode(errors="replace"), e.event_type, e.elapsed_us, e.metadata1) for e in events]
    finally:
        for _, buffer in buffers:
            lib.LiteRtDestroyTensorBuffer(buffer)
        for destroy, handle in ((lib.LiteRtDestroyCompiledModel, compiled), (lib.LiteRtDestroyOptions, options),
                                (lib.LiteRtDestroyModel, model), (lib.LiteRtDestroyEnvironment, env)):
            if handle.value:
                destroy(handle)


def profile(model_dir: Path, manifest: dict, threads: int, batch, warmup: int, runs: int) -> list[dict]:
    """Per-operator milliseconds per inference from LiteRT's profiler (XNNPACK's operators one by one, and the
    operators LiteRT ran itself), over ``runs`` calls after ``warmup``. XNNPACK numbers its operators from 0 in
    each delegated partition: a partition starts where the number falls back or a LiteRT operator ran between."""
    import numpy as np

    model_file = str(Path(model_dir) / manifest["model_files"][0])
    interpreter_cls, _ = _interpreter_class()
    interpreter = interpreter_cls(model_path=model_file)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    if inp["dtype"] in (np.uint8, np.int8):  # the timing does not depend on the pixel values
        x = np.zeros(inp["shape"], inp["dtype"])
    else:
        x = np.asarray(batch, dtype=inp["dtype"])
        x = x.transpose(0, 2, 3, 1) if x.shape[1] == 3 and inp["shape"][-1] == 3 else x
    events = _profiled_events(model_file, threads, x, warmup, runs)
    nodes = _nodes(interpreter)
    ops: dict[str, dict] = {}
    partition, previous = -1, None
    for tag, kind, micros, index in events:
        if tag == RUN_EVENT:
            partition, previous = -1, None
            continue
        if kind == DELEGATE_PROFILED_OPERATOR:
            if previous is None or index <= previous:
                partition += 1
            previous = index
            # type and precision are read from XNNPACK's operator name on the host (precision None)
            name, op_type, precision = f"XNNPACK partition {partition} operator {index}", tag, None
        elif kind == PROFILED_OPERATOR:
            previous = None  # XNNPACK's next operator belongs to another partition
            output, precision = nodes.get(int(index), ("", "-"))
            name, op_type = f"{tag} {output}".strip(), tag
        else:  # the whole invocation, buffer synchronisation, telemetry
            continue
        op = ops.setdefault(name, {"name": name, "type": op_type, "precision": precision, "ms": 0.0, "calls": 0})
        op["ms"] += micros / 1000.0
        op["calls"] += 1
    for op in ops.values():
        op["ms"] /= runs
        op["calls"] = round(op["calls"] / runs)
    return list(ops.values())


def _nodes(interpreter) -> dict[int, tuple[str, str]]:
    """Operator index -> (its output tensor's name, the element type of its first input) of the model's LiteRT
    operators, for the ones LiteRT runs itself; empty where the interpreter does not list them."""
    try:
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        details = interpreter._get_ops_details()  # noqa: SLF001 - the only listing of operators it offers
    except (AttributeError, ValueError):
        return {}
    names = {"int8": "int8", "uint8": "int8", "float32": "fp32", "float16": "fp16"}
    nodes = {}
    for op in details:
        outputs, inputs = list(op.get("outputs", [])), [i for i in op.get("inputs", []) if i >= 0]
        # the converter names a tensor by its module path: the last part tells the layer
        output = tensors[outputs[0]]["name"].rsplit("/", 1)[-1] if outputs and outputs[0] in tensors else ""
        dtype = tensors[inputs[0]]["dtype"].__name__ if inputs and inputs[0] in tensors else ""
        nodes[int(op["index"])] = (output, "quantize" if "QUANTIZE" in op.get("op_name", "") else names.get(dtype, "-"))
    return nodes
