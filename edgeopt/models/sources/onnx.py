"""An ONNX file as the model source: calibrate, quantize and export to runtimes that start from ONNX.

The Detector it builds has ``kind="onnx"`` and holds the prepared graph's bytes; its reference run and the
targets that accept it are found by that kind.

The graph is prepared once so it meets the same contract as a torch detector: a static ``1x3xSxS`` input named
``images``, and one output named ``output`` whose boxes are divided by the input size (nodes appended for
layouts in pixels). Stages and targets that need torch refuse it before any work.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from edgeopt.bundle.decode import DecoderConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.core.contracts import Source
from edgeopt.core.registry import SOURCES
from edgeopt.errors import ConfigError, ModelError, first_line, missing_extra
from edgeopt.data.yolo import parse_names
from edgeopt.models.detector import INPUT_NAME, LAYOUTS, OUTPUT_NAME, Detector


def _onnx() -> Any:
    try:
        import onnx
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


def _metadata_names(text: str, path: Path) -> list[str]:
    """Class names from the ``names`` metadata entry, which some exporters write as a Python literal: a list or
    an ``{id: name}`` mapping. Anything else is refused: guessing would give detections the wrong class names."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: e.g. {[1]: 2}
        value = None
    names = parse_names(value)
    if isinstance(value, dict) and sorted(value) != list(range(len(value))):
        names = None  # ids with gaps or negative ids cannot be mapped to the output's class channels
    if not names:
        shown = text if len(text) <= 60 else text[:60] + "..."
        raise ModelError(f"{path}: the metadata entry 'names' is not a list of class names or an {{id: name}} "
                         f"mapping with ids 0..N-1 (found {shown!r})",
                         hint="set model.class_names to name the classes yourself")
    return names


def _names(model, cfg: Any, fallback: list[str] | None, path: Path) -> list[str]:
    if cfg.class_names:
        return list(cfg.class_names)
    meta = {p.key: p.value for p in model.metadata_props}
    if "names" in meta:
        return _metadata_names(meta["names"], path)
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
    del graph.output[1:]  # extra outputs (e.g. raw feature maps) are not part of the contract
    axis, in_pixels = LAYOUTS[layout].box_axis, LAYOUTS[layout].in_pixels
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


def _output_shape(model: Any) -> tuple[int | None, ...]:
    """The static shape of the prepared graph's output (None for a dimension shape inference leaves open)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _check_layout(shape: tuple[int | None, ...], layout: str, classes: int, path: Path) -> None:
    """Refuse an output whose (statically known) shape contradicts the declared layout."""
    if LAYOUTS[layout].box_axis == 2:
        if len(shape) != 3 or shape[2] not in (6, None):
            raise ModelError(f"{path} outputs {shape}; the 'end2end' layout is (1, K, 6)")
    elif len(shape) != 3 or shape[1] not in (4 + classes, None):
        raise ModelError(f"{path} outputs {shape}; the '{layout}' layout with {classes} classes is "
                         f"(1, {4 + classes}, N)", hint="check model.decoder and model.class_names")


class OnnxSource(Source):
    """``model.source: model.onnx``."""

    def claims(self, cfg: Any) -> bool:
        return Path(cfg.source).suffix.lower() == ".onnx" and Path(cfg.source).is_file()

    def load(self, cfg: Any, class_names: list[str] | None) -> Detector:
        return load_onnx(Path(cfg.source), cfg, class_names)


def load_onnx(path: Path, cfg: Any, fallback_names: list[str] | None) -> Detector:
    """A Detector of kind ``onnx``, holding the prepared graph. Whether it runs is checked by the pipeline's
    preflight, through the runtime that serves as its reference."""
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
                         f"{first_line(exc)})",
                         hint="the file may be truncated or corrupt; export it again") from None
    size = _static_size(model, path, cfg.input_size)
    names = _names(model, cfg, fallback_names, path)
    try:
        prepared = prepare(model, size, cfg.decoder)
    except Exception as exc:
        raise ModelError(f"{path} cannot be prepared as a 1x3x{size}x{size} detector: "
                         f"{exc.__class__.__name__}: {first_line(exc)}") from None
    _check_layout(_output_shape(prepared), cfg.decoder, len(names), path)
    decoder = family_decoder({p.key: p.value for p in model.metadata_props}, LAYOUTS[cfg.decoder].decoder)
    key = stable_hash("onnx", file_sha256(path), size, cfg.decoder, decoder.iou_threshold)
    return Detector(prepared.SerializeToString(), "onnx", size, names, decoder,
                    source=str(path), key=key, head={"family": "onnx"})


def family_decoder(metadata: dict[str, str], decoder: DecoderConfig) -> DecoderConfig:
    """``decoder`` as the model family whose exporter wrote the file would filter its output (its NMS IoU), when a
    registered source recognises the file's metadata; else ``decoder``."""
    for name in SOURCES.names:
        try:
            source = SOURCES.create(name)
        except ImportError:  # a family whose extra is not installed cannot have anything to say
            continue
        found = source.exported_decoder(metadata, decoder)
        if found is not None:
            return found
    return decoder
