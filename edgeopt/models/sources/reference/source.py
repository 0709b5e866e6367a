"""Sources of the reference detector: ``reference`` (the committed weights) and a ``.pt`` written by edgeopt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.bundle.decode import DecoderConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.core.contracts import Source
from edgeopt.models.detector import DEFAULT_SIZE, Detector, PruningHints, TrainingHooks
from edgeopt.models.sources.reference.checkpoint import DEFAULT_WEIGHTS, load_detector, save_detector
from edgeopt.models.sources.reference.network import deployable_output

# the stem sees the image and the head's channel counts are tied to the decode: kept unless the config says
PRUNING = PruningHints(keep=("stem.*", "heads.*"), features=("heads.0", "heads.1", "heads.2"))
TRAINING = TrainingHooks(raw_forward=lambda model, x: model.forward_raw(x),
                         deploy=lambda model, raw, size: [deployable_output(raw, size, size)],
                         save=save_detector)


def load_reference(path: Path, cfg: Any) -> Detector:
    """A Detector around the reference network saved at ``path``."""
    module = load_detector(path)
    names = list(module.config.class_names) or [str(i) for i in range(module.config.num_classes)]
    size = cfg.input_size or DEFAULT_SIZE
    key = stable_hash("model", file_sha256(path), size)
    return Detector(module.eval(), "torch", size, names, DecoderConfig(), source=str(path), key=key,
                    pruning=PRUNING, training=TRAINING)


class ReferenceSource(Source):
    """``model.source: reference``: the weights committed with edgeopt."""

    def claims(self, cfg: Any) -> bool:
        return cfg.source == "reference"

    def load(self, cfg: Any, class_names: list[str] | None) -> Detector:
        return load_reference(DEFAULT_WEIGHTS, cfg)


class WeightsSource(Source):
    """Any other existing ``.pt``: weights written by ``edgeopt train`` (refused with the reason otherwise)."""

    def claims(self, cfg: Any) -> bool:
        return Path(cfg.source).is_file()

    def load(self, cfg: Any, class_names: list[str] | None) -> Detector:
        return load_reference(Path(cfg.source), cfg)
