"""``model.source: best.pt`` for an Ultralytics detection checkpoint (opt-in: the file is a full pickle)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from edgeopt.bundle.decode import DecoderConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.core.contracts import Source
from edgeopt.errors import ModelError
from edgeopt.models.detector import Detector, PruningHints
from edgeopt.models.sources.ultralytics.checkpoint import checkpoint_globals, is_ultralytics, load_ultralytics
from edgeopt.models.sources.ultralytics.normalize import normalize_for_pruning
from edgeopt.models.sources.ultralytics.training import TRAINING
from edgeopt.models.sources.ultralytics.wrapper import UltralyticsDetector, head_inputs, prune_keep

NMS_IOU = 0.7  # Ultralytics' own NMS IoU, so mAP compares with its `val`


def _end2end(module: nn.Module) -> nn.Module:
    """The one-to-one (NMS-free) variant of a wrapped model."""
    return UltralyticsDetector(copy.deepcopy(module.model), module.input_size, end2end=True).eval()


class UltralyticsSource(Source):
    """A ``.pt`` whose pickle references Ultralytics classes (read without unpickling it)."""

    def exported_decoder(self, metadata: dict[str, str], decoder: DecoderConfig) -> DecoderConfig | None:
        """An ONNX file Ultralytics exported is filtered with Ultralytics' NMS IoU, as its checkpoint is."""
        if metadata.get("author", "").startswith("Ultralytics"):
            return dataclasses.replace(decoder, iou_threshold=NMS_IOU)
        return None

    def claims(self, cfg: Any) -> bool:
        path = Path(cfg.source)
        return path.is_file() and path.suffix.lower() != ".onnx" and is_ultralytics(checkpoint_globals(path))

    def load(self, cfg: Any, class_names: list[str] | None) -> Detector:
        path = Path(cfg.source)
        model, info = load_ultralytics(path, cfg.trust_pickle)
        size = cfg.input_size or info["input_size"]
        if size % 32:
            raise ModelError(f"{path} was trained at {size} px, not a multiple of 32", hint="set model.input_size")
        module = UltralyticsDetector(model, size).eval()
        key = stable_hash("ultralytics", file_sha256(path), size)
        head = {"family": "ultralytics", "yaml": info["yaml"], "end2end_capable": info["end2end"],
                "saved_head": info["saved_head"]}
        return Detector(module, "torch", size, cfg.class_names or info["class_names"],
                        DecoderConfig(iou_threshold=NMS_IOU), source=str(path), key=key, head=head,
                        variants={"end2end": _end2end} if info["end2end"] else {},
                        pruning=PruningHints(keep=prune_keep(module), normalize=normalize_for_pruning,
                                            features=head_inputs(module)),
                        training=TRAINING)
