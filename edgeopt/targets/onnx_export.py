"""Static-shape ONNX export of a detector and the head-tail walk on ONNX graphs, shared by the runtimes that
start from ONNX."""

from __future__ import annotations

import io
import warnings
import weakref
from pathlib import Path

from edgeopt.errors import ExportError, first_line
from edgeopt.models.detector import INPUT_NAME, OUTPUT_NAME, Detector
from edgeopt.targets.graph import head_tail

OPSET = 17

# The last torch export: (detector key, simplify), the module it was built from, and the ONNX bytes. An int8 accuracy
# search re-quantizes the same float graph at every step, and every runtime that starts from ONNX shares it, so it
# is built once per detector. The module itself must match too: a copy of a detector around another module with an
# unchanged key (dataclasses.replace) is never served the old graph.
_last_export: tuple[tuple[str, bool], weakref.ref, bytes] | None = None


def export_onnx(detector: Detector, path: Path, simplify: bool = True) -> Path:
    """The detector's static-shape ONNX written to ``path`` (see :func:`build_onnx`); consecutive calls for the
    same torch detector build it once."""
    global _last_export
    memo = (detector.key, simplify)
    last = _last_export
    if detector.kind == "torch" and last is not None and last[0] == memo and last[1]() is detector.model:
        path.write_bytes(last[2])
        return path
    _last_export = None  # a failed build leaves nothing to reuse
    build_onnx(detector, path, simplify)
    if detector.kind == "torch" and detector.key:
        _last_export = (memo, weakref.ref(detector.model), path.read_bytes())
    return path


def build_onnx(detector: Detector, path: Path, simplify: bool = True) -> Path:
    """torch -> ONNX with a static 1x3xSxS input (legacy TorchScript exporter, opset 17), then onnxslim.
    An ONNX source is already prepared to the same contract and is only slimmed and checked.

    The legacy exporter is used because it honours opset 17 and static shapes exactly; both exporters fold
    BatchNorm. onnxslim removes the shape arithmetic the tracer leaves (identical outputs).
    """
    import onnx
    import torch

    if detector.kind == "onnx":  # an ONNX source, already prepared to the same contract
        model = onnx.load_from_string(detector.graph)
    else:
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(detector.module.eval(), (detector.example_input(),), buf, dynamo=False,
                                  opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  do_constant_folding=True)
        except Exception as exc:  # torch raises many types; the user needs the message
            raise ExportError(f"torch.onnx.export failed: {exc.__class__.__name__}: "
                              f"{first_line(exc)}") from None
        model = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def head_tail_nodes(model, depth: int = 1) -> tuple[list[str], list[str]]:
    """The final convolutions feeding the outputs and the decode nodes after them (names).

    Walks back from each graph output, stopping at Conv nodes: these are the head's last convolutions, and
    what lies between them and the outputs is box decode / sigmoid. Quantizing these zeroes confidences or
    coarsens boxes, so the plan keeps them in float by default.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    weight_shape = {t.name: list(t.dims) for t in model.graph.initializer}
    def kernel(node) -> tuple[int, int, int] | None:
        shape = weight_shape.get(node.input[1]) if len(node.input) > 1 else None
        return (shape[0], shape[2], shape[3]) if shape is not None and len(shape) == 4 else None

    convs, decode = head_tail((producer[o.name] for o in model.graph.output if o.name in producer),
                              parents=lambda n: [producer[i] for i in n.input if i in producer],
                              is_conv=lambda n: n.op_type == "Conv",
                              ident=lambda n: n.output[0],  # names may be empty; outputs are unique
                              kernel=kernel, depth=depth)
    return [n.name for n in convs], [n.name for n in decode]
