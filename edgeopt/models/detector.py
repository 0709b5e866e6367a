"""A detector as the pipeline sees it: a model plus what is needed to feed it and read its output.

Every source (the reference detector, edgeopt weights, an Ultralytics checkpoint, a ``module:factory`` torch
module, an ONNX file) becomes a :class:`Detector` whose output follows one contract, so the stages, targets,
parity check and decoder never ask where a model came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgeopt.config.schema import ModelConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.errors import ModelError
from edgeopt.models.checkpoint import DEFAULT_WEIGHTS, load_detector
from edgeopt.models.decode import DecoderConfig

DEFAULT_SIZE = 320
END2END_DECODER = DecoderConfig(layout="end2end", box_format="xyxy", max_detections=300)


def boxes_over_size(y, size: int, end2end: bool = False):
    """A torch output with its boxes divided by the input size: the first 4 channels of a dense ``(B, 4 + C, N)``
    output, or the first 4 columns of end-to-end ``(B, K, 6)`` rows."""
    import torch

    if end2end:
        return torch.cat((y[..., :4] / size, y[..., 4:]), -1)
    return torch.cat((y[:, :4] / size, y[:, 4:]), 1)


@dataclass
class Detector:
    """``module`` maps float NCHW RGB in [0, 1] (letterboxed, ``input_size`` square) to the output described by
    ``decoder``, with boxes divided by the input size. An ONNX source has ``onnx_model`` (bytes) and no module.

    ``prune_ignored``: module-name globs kept unpruned by default (output convolutions always are).
    ``end2end``: builds the one-to-one (NMS-free) variant of a module, for heads that have one; targets whose
    runtime lacks its operators keep the dense head.
    """

    module: nn.Module | None
    input_size: int
    class_names: list[str]
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    source: str = ""
    key: str = ""
    onnx_model: bytes | None = None
    prune_ignored: list[str] = field(default_factory=lambda: ["stem.*", "heads.*"])
    end2end: Callable[[nn.Module], nn.Module] | None = None
    head: dict[str, Any] = field(default_factory=dict)

    def example_input(self):
        """A zero batch of one with the model's input shape (for tracing and export)."""
        import torch

        return torch.zeros(1, 3, self.input_size, self.input_size)

    def infer(self) -> Callable[[np.ndarray], np.ndarray]:
        """The reference ``infer(x) -> output`` (float NCHW batch in): torch, or ONNX Runtime for an ONNX source."""
        if self.module is None:
            from edgeopt.models.onnx_source import onnx_infer

            return onnx_infer(self.onnx_model)
        from edgeopt.eval.predict import torch_infer

        return torch_infer(self.module)

    def with_module(self, module: nn.Module, tag: str) -> Detector:
        """The same detector around another module (e.g. pruned); ``tag`` identifies the change in the key."""
        return replace(self, module=module, source=f"{self.source} ({tag})", key=stable_hash(self.key, tag))

    def for_target(self, target) -> tuple[Detector, dict[str, Any]]:
        """The variant to export for ``target`` and the head choice to record in its manifest."""
        if self.end2end is None:
            return self, dict(self.head)
        reason = target.end2end_unsupported()
        if reason:
            return self, {**self.head, "exported": "one-to-many + NMS", "reason": reason}
        variant = replace(self, module=self.end2end(self.module), decoder=END2END_DECODER,
                          key=stable_hash(self.key, "end2end"), end2end=None)
        return variant, {**self.head, "exported": "end-to-end (one-to-one head, top-K in graph, no NMS)"}


def load_model(cfg: ModelConfig, class_names: list[str] | None = None) -> Detector:
    """Build the detector named by the config. Its ``key`` hashes the model bytes and everything that shapes it.

    ``class_names``: fallback names (from the validation set) for sources that carry none.
    """
    source = cfg.source
    if source == "reference":
        return _load_edgeopt(DEFAULT_WEIGHTS, cfg)
    if _is_factory(source):
        from edgeopt.models.factory import load_factory

        return load_factory(cfg, class_names)
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", hint="model.source is 'reference', a .pt or .onnx file, "
                         "or 'package.module:factory'")
    if path.suffix.lower() == ".onnx":
        from edgeopt.models.onnx_source import load_onnx

        return load_onnx(path, cfg, class_names)
    from edgeopt.models.ultralytics import checkpoint_globals, is_ultralytics

    if is_ultralytics(checkpoint_globals(path)):
        return _load_ultralytics(path, cfg)
    return _load_edgeopt(path, cfg)


def _is_factory(source: str) -> bool:
    module, sep, attr = source.partition(":")
    return bool(sep) and module.replace(".", "").replace("_", "").isalnum() and attr.isidentifier()


def _load_edgeopt(path: Path, cfg: ModelConfig) -> Detector:
    module = load_detector(path)
    names = list(module.config.class_names) or [str(i) for i in range(module.config.num_classes)]
    size = cfg.input_size or DEFAULT_SIZE
    key = stable_hash("model", file_sha256(path), size)
    return Detector(module.eval(), size, names, DecoderConfig(), source=str(path), key=key)


def _load_ultralytics(path: Path, cfg: ModelConfig) -> Detector:
    from edgeopt.models.ultralytics import UltralyticsDetector, load_ultralytics, prune_ignored

    model, info = load_ultralytics(path, cfg.trust_pickle)
    size = cfg.input_size or info["input_size"]
    if size % 32:
        raise ModelError(f"{path} was trained at {size} px, not a multiple of 32", hint="set model.input_size")
    module = UltralyticsDetector(model, size).eval()
    key = stable_hash("ultralytics", file_sha256(path), size)
    head = {"family": "ultralytics", "yaml": info["yaml"], "end2end_capable": info["end2end"]}

    def end2end(m: nn.Module) -> nn.Module:
        import copy

        return UltralyticsDetector(copy.deepcopy(m.model), m.input_size, end2end=True).eval()

    # the dense variant uses Ultralytics' own NMS IoU (0.7), so mAP compares with its `val`
    return Detector(module, size, cfg.class_names or info["class_names"], DecoderConfig(iou_threshold=0.7),
                    source=str(path), key=key, prune_ignored=prune_ignored(module),
                    end2end=end2end if info["end2end"] else None, head=head)
