"""An ONNX file as the model source: calibrate, quantize and export to runtimes that start from ONNX.

The graph is prepared once so it meets the same contract as a torch detector: a static ``1x3xSxS`` input named
``images``, and one output named ``output`` whose boxes are divided by the input size (nodes appended for
layouts in pixels). Stages that need torch (prune, TFLite conversion) refuse it before any work.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeopt.config.schema import ModelConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.errors import ConfigError, ModelError, missing_extra
from edgeopt.targets.onnx_export import INPUT_NAME, OUTPUT_NAME  # the names every ONNX edgeopt writes uses

LAYOUTS = {"yolo": ("dense", 1, True), "yolo_normalized": ("dense", 1, False), "end2end": ("end2end", 2, True)}


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the reference runs through it)
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "onnx") from None
    return onnx


def _static_size(model, path: Path, wanted: int | None) -> int:
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} inputs; edgeopt expects one image input (N, 3, H, W)")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"{path}: the input has rank {len(dims)}, expected 4 (N, 3, H, W)")
    h, w = (d.dim_value if d.HasField("dim_value") else None for d in dims[2:])
    if h and w:
        if h != w:
            raise ModelError(f"{path} takes {w}x{h} images; edgeopt handles square inputs")
        if wanted and wanted != h:
            raise ConfigError(f"model.input_size {wanted} differs from the ONNX model's fixed input {h}",
                              hint=f"set model.input_size: {h} or leave it out")
        return h
    if not wanted:
        raise ConfigError(f"{path} has a dynamic input size", hint="set model.input_size")
    return wanted


def _names(model, cfg: ModelConfig, fallback: list[str] | None) -> list[str]:
    if cfg.class_names:
        return list(cfg.class_names)
    meta = {p.key: p.value for p in model.metadata_props}
    if "names" in meta:  # Ultralytics exports store {id: name} as a Python literal
        try:
            names = ast.literal_eval(meta["names"])
            return [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
        except (ValueError, SyntaxError):
            pass
    if fallback:
        return list(fallback)
    raise ConfigError("the ONNX model carries no class names", hint="set model.class_names")


def prepare(model, size: int, layout: str):
    """Fix the input to ``1x3xSxS`` named ``images``; name the output ``output`` with boxes divided by ``size``."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    source_in = next(i for i in graph.input if i.name not in {t.name for t in graph.initializer})
    for node in graph.node:
        node.input[:] = [INPUT_NAME if n == source_in.name else n for n in node.input]
    source_in.name = INPUT_NAME
    for d, v in zip(source_in.type.tensor_type.shape.dim, (1, 3, size, size)):
        d.Clear()
        d.dim_value = v
    out = graph.output[0]
    del graph.output[1:]  # extra outputs (e.g. Ultralytics' raw feature maps) are not part of the contract
    _, axis, in_pixels = LAYOUTS[layout]
    raw = out.name
    if in_pixels:  # out = concat(out[:4] / size, out[4:]) along the box axis
        consts = [helper.make_tensor(f"edgeopt_{k}", TensorProto.INT64, [1], [v])
                  for k, v in (("zero", 0), ("four", 4), ("end", 2**62), ("axis", axis))]
        consts.append(helper.make_tensor("edgeopt_size", TensorProto.FLOAT, [], [float(size)]))
        graph.initializer.extend(consts)
        graph.node.extend([
            helper.make_node("Slice", [raw, "edgeopt_zero", "edgeopt_four", "edgeopt_axis"], ["edgeopt_box"]),
            helper.make_node("Div", ["edgeopt_box", "edgeopt_size"], ["edgeopt_box_norm"]),
            helper.make_node("Slice", [raw, "edgeopt_four", "edgeopt_end", "edgeopt_axis"], ["edgeopt_rest"]),
            helper.make_node("Concat", ["edgeopt_box_norm", "edgeopt_rest"], [OUTPUT_NAME], axis=axis),
        ])
    else:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if n == raw else n for n in node.output]
    out.name = OUTPUT_NAME
    out.type.tensor_type.ClearField("shape")
    used = {node.name for node in graph.node}
    for i, node in enumerate(graph.node):  # quantizers keep nodes float by name: every node needs one
        if not node.name:
            name = f"edgeopt_{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return onnx.shape_inference.infer_shapes(model)


def load_onnx(path: Path, cfg: ModelConfig, fallback_names: list[str] | None):
    """A :class:`~edgeopt.models.detector.Detector` without a torch module, holding the prepared ONNX bytes."""
    from edgeopt.models.decode import DecoderConfig
    from edgeopt.models.detector import END2END_DECODER, Detector

    onnx = _onnx()
    if cfg.decoder not in LAYOUTS:
        raise ConfigError(f"model.decoder {cfg.decoder!r} is not available for an ONNX source",
                          hint=f"use one of {', '.join(LAYOUTS)} (a torch decoder function needs a torch model)")
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{path} is not a valid ONNX model ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                         hint="the file may be truncated or corrupt; export it again") from None
    size = _static_size(model, path, cfg.input_size)
    names = _names(model, cfg, fallback_names)
    try:
        prepared = prepare(model, size, cfg.decoder).SerializeToString()
        probe = onnx_infer(prepared)(np.zeros((1, 3, size, size), np.float32))
    except Exception as exc:
        raise ModelError(f"{path} does not run as a 1x3x{size}x{size} detector in ONNX Runtime: "
                         f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
    layout = LAYOUTS[cfg.decoder][0]
    if layout == "dense" and (probe.ndim != 3 or probe.shape[1] != 4 + len(names)):
        raise ModelError(f"{path} outputs {probe.shape}; the 'yolo' layout with {len(names)} classes is "
                         f"(1, {4 + len(names)}, N)", hint="check model.decoder and model.class_names")
    if layout == "end2end" and (probe.ndim != 3 or probe.shape[2] != 6):
        raise ModelError(f"{path} outputs {probe.shape}; the 'end2end' layout is (1, K, 6)")
    decoder = END2END_DECODER if layout == "end2end" else DecoderConfig()
    key = stable_hash("onnx", file_sha256(path), size, cfg.decoder)
    return Detector(None, size, names, decoder, source=str(path), key=key, onnx_model=prepared,
                    head={"family": "onnx"})


def onnx_infer(model: bytes, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime on a prepared model: ``infer(batch) -> output``, one image at a time (static batch of one)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    def infer(x: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {INPUT_NAME: np.ascontiguousarray(xi[None], np.float32)})[0]
                               for xi in x])

    return infer
