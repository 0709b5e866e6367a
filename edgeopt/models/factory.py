"""Any torch detector: ``package.module:factory`` builds the module, ``weights`` (a state_dict) fills it.

The output is adapted to edgeopt's contract by :class:`OutputAdapter` (a named layout, or the user's own torch
function); the adapter is part of the traced graph, so every runtime emits what the shared decoder reads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeopt.config.schema import ModelConfig
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.errors import ConfigError, ModelError
from edgeopt.models.checkpoint import load_checkpoint_dict
from edgeopt.models.decode import DecoderConfig
from edgeopt.models.detector import boxes_over_size

NAMED_LAYOUTS = ("yolo", "yolo_normalized", "end2end")


def resolve(spec: str, what: str) -> Callable[..., Any]:
    """Import ``package.module:name`` and return the attribute, with errors that name the part that failed."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})",
                          hint="the package must be importable (installed, or on PYTHONPATH)") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


class OutputAdapter(nn.Module):
    """The wrapped module's output in edgeopt's layout: optional user function, then boxes / input size.

    ``layout``: ``yolo`` (dense, pixel boxes), ``yolo_normalized`` (dense, already normalised) or ``end2end``
    (``(B, K, 6)`` rows, pixel boxes). A tuple or list output is reduced to its first element (Ultralytics-style
    models return ``(predictions, extras)``).
    """

    def __init__(self, model: nn.Module, input_size: int, layout: str, fn: Callable | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_size = input_size
        self.layout = layout
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        if self.fn is not None:
            y = self.fn(y)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if self.layout == "yolo_normalized":
            return y
        return boxes_over_size(y, self.input_size, self.layout == "end2end")


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    data = load_checkpoint_dict(path)
    for key in ("state_dict", "model_state_dict", "model"):  # common wrappers around a state_dict
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    return data


def load_factory(cfg: ModelConfig, fallback_names: list[str] | None):
    """Build, load and wrap the module named by ``cfg.source``; a :class:`~edgeopt.models.detector.Detector`."""
    from edgeopt.models.detector import DEFAULT_SIZE, END2END_DECODER, Detector

    factory = resolve(cfg.source, "model.source")
    try:
        model = factory(**cfg.factory_args)
    except Exception as exc:
        raise ModelError(f"model.source {cfg.source!r} raised {exc.__class__.__name__}: {exc}",
                         hint="check model.factory_args") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.source {cfg.source!r} returned a {type(model).__name__}, not a torch nn.Module")
    weights_key = None
    if cfg.weights:
        path = Path(cfg.weights)
        _load_weights(model, _state_dict(path), path)
        weights_key = file_sha256(path)
    fn, layout = None, cfg.decoder
    if layout not in NAMED_LAYOUTS:
        if ":" not in layout:
            raise ConfigError(f"model.decoder {layout!r} is neither a layout ({', '.join(NAMED_LAYOUTS)}) nor "
                              "'package.module:function'")
        fn, layout = resolve(layout, "model.decoder"), "yolo"
    size = cfg.input_size or DEFAULT_SIZE
    names = cfg.class_names or fallback_names
    if not names:
        raise ConfigError(f"{cfg.source} carries no class names", hint="set model.class_names")
    module = OutputAdapter(model.float().eval(), size, layout, fn).eval()
    _probe(module, size, layout, len(names), cfg.source)
    decoder = END2END_DECODER if layout == "end2end" else DecoderConfig()
    key = stable_hash("factory", cfg.source, cfg.factory_args, weights_key, cfg.decoder, size)
    return Detector(module, size, list(names), decoder, source=cfg.source, key=key,
                    prune_ignored=[], head={"family": "torch", "decoder": cfg.decoder})


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = [], []
    own = model.state_dict()
    for k in own:
        if k not in state:
            missing.append(k)
    for k in state:
        if k not in own:
            unexpected.append(k)
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", mismatched))
                 if keys]
        raise ModelError(f"{path} does not fit the module built by the factory ({'; '.join(parts)})",
                         hint="check model.factory_args (e.g. the number of classes) and the weights file")
    model.load_state_dict(state)


def _probe(module: nn.Module, size: int, layout: str, classes: int, source: str) -> None:
    """Run one zero image and check the output has the declared layout, before any stage relies on it."""
    with torch.inference_mode():
        try:
            y = module(torch.zeros(1, 3, size, size))
        except Exception as exc:
            raise ModelError(f"{source} fails on a 1x3x{size}x{size} input: {exc.__class__.__name__}: {exc}") from None
    shape = tuple(y.shape)
    if layout == "end2end":
        ok, want = len(shape) == 3 and shape[2] == 6, "(1, K, 6)"
    else:
        ok, want = len(shape) == 3 and shape[1] == 4 + classes, f"(1, {4 + classes}, N)"
    if not ok:
        raise ModelError(f"{source} outputs {shape}, expected {want} for decoder layout {layout!r} and "
                         f"{classes} classes", hint="set model.decoder (a layout or a torch function) and class_names")
