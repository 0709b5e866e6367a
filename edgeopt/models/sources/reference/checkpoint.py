"""Reference-detector checkpoints: ``{format, config, channels, state_dict}``, loadable with weights_only=True."""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import ModelError, first_line
from edgeopt.models.checkpoint import (channel_spec, identity_modules, load_checkpoint_dict, load_into, plain_state,
                                      save_checkpoint)
from edgeopt.models.sources.reference.network import ReferenceConfig, ReferenceDetector

FORMAT = "edgeopt.reference/1"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "reference.pt"


def is_reference_checkpoint(data: dict) -> bool:
    return data.get("format") == FORMAT


def save_detector(model: ReferenceDetector, path: str | Path) -> Path:
    """Write ``{"format", "config", "channels", "identity", "state_dict"}`` atomically (``identity``: blocks
    depth pruning dropped)."""
    return save_checkpoint(path, {"format": FORMAT, "config": model.config.to_dict(), "channels": channel_spec(model),
                                  "identity": identity_modules(model), "state_dict": plain_state(model)})


def load_detector(path: str | Path | None = None) -> ReferenceDetector:
    """Rebuild a reference detector from a saved file (the committed default weights when ``path`` is None)."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    data = load_checkpoint_dict(path)
    if data.get("format") != FORMAT:
        raise ModelError(f"{path} is not an edgeopt reference-detector file (format {data.get('format')!r}, "
                         f"expected {FORMAT!r})")
    try:
        model = ReferenceDetector(ReferenceConfig.from_dict(data["config"]))
    except Exception as exc:  # a missing or malformed architecture header
        raise ModelError(f"{path}: the architecture config is missing or invalid "
                         f"({exc.__class__.__name__}: {exc})") from None
    unpruned = channel_spec(model)
    model = load_into(model, data, path)
    if data.get("channels") and data["channels"] != unpruned:
        _probe(model, path)
    return model


def _probe(model: ReferenceDetector, path: str | Path) -> None:
    """Run one zero image through a pruned model: a channel spec whose entries each fit their layer can still
    leave two layers disagreeing on the channels between them, which would otherwise surface mid-run."""
    import torch

    size = model.config.input_size
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    except Exception as exc:
        raise ModelError(f"{path}: the channel spec does not fit together (a 1x3x{size}x{size} image fails: "
                         f"{first_line(exc)})", hint="the file was not written by edgeopt, or was edited") from None


