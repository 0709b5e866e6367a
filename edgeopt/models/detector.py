"""A detector as the pipeline sees it: a model plus what is needed to feed it and read its output.

Every source (the reference detector, edgeopt weights, a third-party checkpoint, a ``module:factory`` torch
module, an ONNX file) becomes a :class:`Detector` whose output follows one contract (see :data:`LAYOUTS`), so
stages, targets, the parity check and the decoder never ask where a model came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle.decode import DecoderConfig
from edgeopt.core.cache import stable_hash
from edgeopt.errors import ModelError

DEFAULT_SIZE = 320
INPUT_NAME = "images"  # the input and output names of every graph edgeopt writes or prepares
OUTPUT_NAME = "output"
END2END_DECODER = DecoderConfig(layout="end2end", box_format="xyxy", max_detections=300)
NMS_HEAD = "one-to-many + NMS"  # what the manifest says of each head exported
END2END_HEAD = "end-to-end (one-to-one head, top-K in graph, no NMS)"


@dataclass(frozen=True)
class Layout:
    """A named output layout a model may have (``model.decoder``): how the shared decoder reads it, whether its
    boxes are in input pixels (edgeopt divides them by the input size inside the graph) and on which axis the
    4 box coordinates lie."""

    decoder: DecoderConfig
    in_pixels: bool
    box_axis: int


LAYOUTS = {
    "yolo": Layout(DecoderConfig(), in_pixels=True, box_axis=1),
    "yolo_normalized": Layout(DecoderConfig(), in_pixels=False, box_axis=1),
    "end2end": Layout(END2END_DECODER, in_pixels=True, box_axis=2),
}

# what the manifest says about the output, by decoder layout
OUTPUT_DESCRIPTIONS = {
    "dense": "(1, 4 + C, N): cx, cy, w, h divided by the input size, then class scores",
    "end2end": "(1, K, 6): x1, y1, x2, y2 divided by the input size, score, class id (ranked, no NMS needed)",
}


def boxes_over_size(y: Any, size: int, end2end: bool = False) -> Any:
    """A torch output with its boxes divided by the input size: the first 4 channels of a dense ``(B, 4 + C, N)``
    output, or the first 4 columns of end-to-end ``(B, K, 6)`` rows."""
    import torch

    if end2end:
        return torch.cat((y[..., :4] / size, y[..., 4:]), -1)
    return torch.cat((y[:, :4] / size, y[:, 4:]), 1)


def torch_infer(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch detector (eval mode, no grad) as a numpy ``infer`` function."""
    import torch

    model.eval()

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return infer


@dataclass(frozen=True)
class PruningHints:
    """What pruning must respect in this family: module-name globs kept unpruned by default (output convolutions
    always are), and a rewrite into an output-identical form the dependency graph can follow (in place).
    ``features``: the modules whose inputs are the multi-scale features the head reads (names valid in both the
    model and its prunable form); recovery teaches the pruned model's features to imitate the unpruned one's."""

    keep: tuple[str, ...] = ()
    normalize: Callable[[Any], Any] | None = None
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingHooks:
    """For a family edgeopt can fine-tune with labels: ``raw_forward(model, x)`` gives the raw head outputs its
    loss reads; ``deploy(model, raw, size)`` turns them into the deployable output of every head branch (as
    :func:`edgeopt.models.pruning.head_outputs` lists them); ``loss(model, raw, targets, size)`` is the family's
    own detection loss, targets being ``(K, 5)`` tensors of (class, x1, y1, x2, y2) in input pixels (None:
    edgeopt's loss on ``(box, logit)`` pairs); ``save(model, path)`` writes a standalone checkpoint of a trained
    (or pruned) model."""

    raw_forward: Callable[[Any, Any], Any]
    deploy: Callable[[Any, Any, int], list[Any]]
    loss: Callable[[Any, Any, list[Any], int], Any] | None = None
    save: Callable[[Any, Path], Any] | None = None


@dataclass
class Detector:
    """``model`` maps float NCHW RGB in [0, 1] (letterboxed, ``input_size`` square) to the output described by
    ``decoder``, with boxes divided by the input size. ``kind`` says what ``model`` is: ``torch`` (an
    ``nn.Module``) or ``onnx`` (the bytes of a graph prepared to the same contract).

    ``head``: what the manifest records about the head; ``variants``: other heads this model can be exported
    with, as builders of the module (``end2end``: a one-to-one head ranking rows in the graph, no NMS).
    """

    model: Any
    kind: str
    input_size: int
    class_names: list[str]
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    source: str = ""
    key: str = ""
    head: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    pruning: PruningHints = field(default_factory=PruningHints)
    training: TrainingHooks | None = None

    @property
    def module(self) -> Any:
        """The torch module (a ModelError for a detector that has none)."""
        if self.kind != "torch":
            raise ModelError(f"{self.source} is an {self.kind} model, not a torch module")
        return self.model

    @property
    def graph(self) -> bytes:
        """The prepared ONNX graph of an ``onnx`` detector."""
        if self.kind != "onnx":
            raise ModelError(f"{self.source} is a {self.kind} model, not an ONNX graph")
        return self.model

    def example_input(self) -> Any:
        """A zero batch of one with the model's input shape (for tracing and export)."""
        import torch

        return torch.zeros(1, 3, self.input_size, self.input_size)

    def with_module(self, module: Any, tag: str) -> Detector:
        """The same detector around another module (e.g. pruned); ``tag`` identifies the change in the key."""
        return replace(self, model=module, source=f"{self.source} ({tag})", key=stable_hash(self.key, tag))

    def heads(self) -> dict[str, Detector]:
        """The detector under each head it can be exported with (``nms``: itself; ``end2end``: the one-to-one
        variant), or ``{}`` for a detector with one head."""
        if "end2end" not in self.variants:
            return {}
        variant = replace(self, model=self.variants["end2end"](self.model), decoder=END2END_DECODER,
                          key=stable_hash(self.key, "end2end"), variants={})
        return {"nms": self, "end2end": variant}

    def for_heads(self, heads: tuple[str, ...], refusal: str | None,
                  choice: dict[str, Any] | None = None) -> tuple[Detector, dict[str, Any]]:
        """The variant to export for a runtime that runs ``heads``, and what to record about the head.

        ``refusal``: why the runtime lacks the end-to-end head, if it does; ``choice``: the head chosen for this
        model and why (``{"head": "end2end" | "nms", ...}``, recorded as given; default: end-to-end)."""
        if "end2end" not in self.variants:
            return self, dict(self.head)
        choice = choice or {"head": "end2end", "reason": "no choice made: the end-to-end head by default"}
        record = {**self.head, "choice": choice}
        if "end2end" not in heads:
            return self, {**record, "variant": "nms", "exported": NMS_HEAD, "reason": refusal}
        if choice["head"] == "nms":
            return self, {**record, "variant": "nms", "exported": NMS_HEAD, "reason": choice["reason"]}
        return self.heads()["end2end"], {**record, "variant": "end2end", "exported": END2END_HEAD,
                                         "reason": choice["reason"]}
