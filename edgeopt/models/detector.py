"""A detector as the pipeline sees it: a torch module plus what is needed to feed it and read its output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from edgeopt.config.schema import ModelConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.errors import ModelError
from edgeopt.models.checkpoint import DEFAULT_WEIGHTS, load_detector
from edgeopt.models.decode import DecoderConfig


@dataclass
class Detector:
    """``module`` maps float NCHW RGB in [0, 1] (letterboxed, ``input_size`` square) to a YOLO-style output."""

    module: nn.Module
    input_size: int
    class_names: list[str]
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    source: str = ""
    key: str = ""

    def example_input(self):
        """A zero batch of one with the model's input shape (for tracing and export)."""
        import torch

        return torch.zeros(1, 3, self.input_size, self.input_size)


def load_model(cfg: ModelConfig) -> Detector:
    """Build the detector named by the config; its ``key`` hashes the weights' bytes and the input size."""
    path = DEFAULT_WEIGHTS if cfg.source == "reference" else Path(cfg.source)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}",
                         hint="model.source is 'reference' or a path to weights saved by `edgeopt train`")
    module = load_detector(path)
    names = list(module.config.class_names) or [str(i) for i in range(module.config.num_classes)]
    key = stable_hash("model", file_sha256(path), cfg.input_size)
    return Detector(module.eval(), cfg.input_size, names, DecoderConfig(), source=str(path), key=key)
