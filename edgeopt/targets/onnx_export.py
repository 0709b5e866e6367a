"""Static-shape ONNX export of a torch detector and graph helpers shared by ONNX-based targets."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from edgeopt.errors import ExportError
from edgeopt.targets.graph import head_tail

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "output"


def export_onnx(detector, path: Path, simplify: bool = True) -> Path:
    """torch -> ONNX with a static 1x3xSxS input (legacy TorchScript exporter, opset 17), then onnxslim.
    An ONNX source is already prepared to the same contract and is only slimmed and checked.

    The legacy exporter is used because it honours opset 17 and static shapes exactly; both exporters fold
    BatchNorm. onnxslim removes the shape arithmetic the tracer leaves (identical outputs).
    """
    import onnx
    import torch

    if detector.onnx_model is not None:  # an ONNX source, already prepared to the same contract
        model = onnx.load_from_string(detector.onnx_model)
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
                              f"{str(exc).splitlines()[0]}") from None
        model = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def is_projection(weight_shape: list[int] | None) -> bool:
    """A 1x1 convolution to one channel: the DFL expectation of YOLOv8-style heads as exported by Ultralytics
    (softmax over bins, then a fixed conv with weights 0..15). It is decode, not the head's last layer; treating
    one as decode only keeps more in float."""
    return weight_shape is not None and len(weight_shape) == 4 and weight_shape[0] == 1 and weight_shape[2:] == [1, 1]


def head_tail_nodes(model) -> tuple[list[str], list[str]]:
    """The final convolutions feeding the outputs and the decode nodes after them (names).

    Walks back from each graph output, stopping at Conv nodes: these are the head's last convolutions, and
    what lies between them and the outputs is box decode / sigmoid. Quantizing these zeroes confidences or
    coarsens boxes, so the plan keeps them in float by default.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    weight_shape = {t.name: list(t.dims) for t in model.graph.initializer}
    convs, decode = head_tail((producer[o.name] for o in model.graph.output if o.name in producer),
                              parents=lambda n: [producer[i] for i in n.input if i in producer],
                              is_conv=lambda n: n.op_type == "Conv"
                              and not is_projection(weight_shape.get(n.input[1]) if len(n.input) > 1 else None),
                              ident=lambda n: n.output[0])  # names may be empty; outputs are unique
    return [n.name for n in convs], [n.name for n in decode]
