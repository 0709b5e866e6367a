"""Ultralytics YOLO detection checkpoints (YOLOv8, YOLO11, YOLO26, ...) as edgeopt detectors.

An Ultralytics ``.pt`` is a full pickle of the model object: loading it can run code, so edgeopt loads it only
when the config opts in (``model.trust_pickle: true``). What the file is (detection, segmentation, pose, ...)
is read from the globals it references without unpickling anything, so a wrong file is refused either way.

The model is wrapped so its output is edgeopt's dense layout (boxes normalised by the input size): every
runtime, the shared decoder and the parity check then treat it like the reference detector. Heads with a
one-to-one branch (YOLO26, YOLOv10) also get an end-to-end variant, ``(1, K, 6)`` rows ranked inside the
graph, exported where the target runtime has the TopK/Gather operators it needs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.models.detector import boxes_over_size


class DFLSum(nn.Module):
    """Ultralytics' DFL (distribution focal loss decode) as a softmax-weighted sum instead of a fixed 1x1 conv.

    Same outputs. As a convolution, the decode looked like the head's last layer to the graph walk that keeps the
    head's tail in float (edgeopt/targets/graph.py), so the real last box convolutions and the softmax were
    quantized; written as arithmetic it is decode, as it should be.
    """

    def __init__(self, dfl: nn.Module) -> None:
        super().__init__()
        self.bins = dfl.c1
        self.register_buffer("weights", dfl.conv.weight.detach().reshape(1, 1, dfl.c1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return (x.view(b, 4, self.bins, a).softmax(2) * self.weights).sum(2)


class UltralyticsDetector(nn.Module):
    """An Ultralytics ``DetectionModel`` with edgeopt's output layout.

    ``end2end=False``: ``(B, 4 + C, N)``, cx, cy, w, h divided by the input size, then class scores (the
    one-to-many head, filtered by NMS). ``end2end=True``: ``(B, K, 6)``, x1, y1, x2, y2 (divided by the input
    size), score, class, from the one-to-one head and an in-graph top-K (no NMS).
    The output is the same in train mode, so distillation trains exactly what is deployed.
    """

    def __init__(self, model: nn.Module, input_size: int, end2end: bool = False) -> None:
        super().__init__()
        self.model = model
        self.input_size = input_size
        self.end2end = end2end
        head = self.head
        self.strides = [int(s) for s in head.stride]  # Python ints: reading a tensor under torch.export is a guard
        head.export, head.format, head.dynamic = True, "onnx", False  # plain decoded tensor out
        if hasattr(getattr(head, "dfl", None), "conv"):
            head.dfl = DFLSum(head.dfl)
        if has_one2one(head):
            head.end2end = end2end
        self._anchors(1)

    @property
    def head(self) -> nn.Module:
        return self.model.model[-1]

    def _anchors(self, batch: int) -> None:
        """Hand the head its anchors for this input size, made once outside any tracer or inference mode.

        The head builds anchors itself whenever the feature shape (batch included) changes; built inside an
        export trace they become meshgrid ops in the graph (a converter to a mobile runtime could not convert them, and a trace that builds
        them once but not twice fails its sanity check), and built under inference_mode they cannot enter
        autograd later. Here they depend only on the input size; the shape the head compares is set per call.
        """
        head = self.head
        size, strides = self.input_size, self.strides
        if getattr(self, "_anchor_cache", None) is None:
            from ultralytics.utils.tal import make_anchors

            with torch.inference_mode(False), torch.no_grad():
                feats = [torch.zeros(1, 1, size // s, size // s) for s in strides]
                self._anchor_cache = tuple(a.transpose(0, 1) for a in make_anchors(feats, head.stride, 0.5))
        head.anchors, head.strides = self._anchor_cache
        head.shape = torch.Size((batch, head.cv2[0][0].conv.in_channels, size // strides[0], size // strides[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head
        training = head.training
        head.training = False  # the head alone: its inference decode, while BatchNorms follow the module's mode
        self._anchors(x.shape[0])
        try:
            y = self.model(x)
        finally:
            head.training = training
        return boxes_over_size(y, self.input_size, self.end2end)

    def head_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The dense output of every head branch (one-to-many, and one-to-one if present).

        Pruning traces these so the one-to-one branch's inputs shrink with the neck; distillation matches them
        so that branch keeps up with the changed features.
        """
        return self.dense(self.raw(x))

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's raw predictions, what Ultralytics' loss reads: ``{"boxes", "scores", "feats"}``, or that
        per branch under ``one2many`` / ``one2one``."""
        head = self.head
        head.export = False
        self._anchors(x.shape[0])
        try:
            out = self.model(x)
        finally:
            head.export = True
        return out if head.training else out[1]

    def dense(self, raw: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every branch of ``raw`` decoded to the deployable layout (boxes divided by the input size)."""
        head = self.head
        branches = [raw["one2many"], raw["one2one"]] if "one2many" in raw else [raw]
        self._anchors(branches[0]["boxes"].shape[0])
        return [boxes_over_size(head._inference(p), self.input_size) for p in branches]


def has_one2one(head: nn.Module) -> bool:
    """True for heads with a one-to-one (NMS-free) branch: YOLO26, YOLOv10."""
    return getattr(head, "one2one_cv2", None) is not None


def prune_keep(model: nn.Module) -> tuple[str, ...]:
    """Module globs kept unpruned in a wrapped DetectionModel: the first convolution (its input is the image), the
    whole detection head (its channel counts are tied to the decode) and attention blocks (their channels are
    split into heads)."""
    layers = model.model.model
    ignored = ["model.model.0.*", f"model.model.{len(layers) - 1}.*"]
    for i, layer in enumerate(layers):
        if any(type(m).__name__ in ("Attention", "AAttn", "PSA", "C2PSA", "A2C2f") for m in layer.modules()):
            ignored.append(f"model.model.{i}.*")
    return tuple(ignored)


def head_inputs(model: nn.Module) -> tuple[str, ...]:
    """The module whose inputs are the multi-scale features the head reads, in a wrapped DetectionModel: the
    detection head itself (its input is the list of feature maps)."""
    return (f"model.model.{len(model.model.model) - 1}",)
