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

from edgeopt.config.schema import CODE_REF
from edgeopt.core.cache import file_sha256, stable_hash
from edgeopt.core.contracts import Source
from edgeopt.errors import ConfigError, ModelError
from edgeopt.models.checkpoint import load_checkpoint_dict
from edgeopt.models.detector import DEFAULT_SIZE, LAYOUTS, Detector, boxes_over_size


def resolve(spec: str, what: str) -> Callable[..., Any]:
    """Import ``package.module:name`` and return the attribute, with errors that name the part that failed."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})",
                          hint="the package must be importable (installed, or on PYTHONPATH)") from None
    except Exception as exc:  # the user's module itself fails: a SyntaxError, or an error at import time
        where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, SyntaxError) else ""
        raise ModelError(f"{what} {spec!r}: importing {module_name!r} raised {exc.__class__.__name__}: "
                         f"{exc}{where}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


class OutputAdapter(nn.Module):
    """The wrapped module's output in edgeopt's layout: optional user function, then boxes / input size.

    ``layout``: a name in :data:`~edgeopt.models.detector.LAYOUTS`. A tuple or list output is reduced to its
    first element (many detectors return ``(predictions, extras)``).
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
        layout = LAYOUTS[self.layout]
        if not layout.in_pixels:
            return y
        return boxes_over_size(y, self.input_size, layout.box_axis == 2)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    data = load_checkpoint_dict(path)
    for key in ("state_dict", "model_state_dict", "model"):  # common wrappers around a state_dict
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    return data


def is_factory(source: str) -> bool:
    """True for ``package.module:function``."""
    return CODE_REF.fullmatch(source) is not None


class FactorySource(Source):
    """``model.source: package.module:factory``: any torch module."""

    def claims(self, cfg: Any) -> bool:
        return is_factory(cfg.source)

    def load(self, cfg: Any, class_names: list[str] | None) -> Detector:
        return load_factory(cfg, class_names)


def load_factory(cfg: Any, fallback_names: list[str] | None) -> Detector:
    """Build, load and wrap the module named by ``cfg.source`` (only with ``model.trust_code``: it runs code)."""
    if not cfg.trust_code:
        raise ConfigError(f"model.source {cfg.source!r} imports and runs Python code",
                          hint="set model.trust_code: true if you trust it")
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
    if layout not in LAYOUTS:
        if not CODE_REF.fullmatch(layout):
            raise ConfigError(f"model.decoder {layout!r} is neither a layout ({', '.join(LAYOUTS)}) nor "
                              "'package.module:function'")
        fn, layout = resolve(layout, "model.decoder"), "yolo"
    size = cfg.input_size or DEFAULT_SIZE
    names = cfg.class_names or fallback_names
    if not names:
        raise ConfigError(f"{cfg.source} carries no class names", hint="set model.class_names")
    module = OutputAdapter(model.float().eval(), size, layout, fn).eval()
    _probe(module, size, layout, len(names), cfg.source)
    key = stable_hash("factory", cfg.source, cfg.factory_args, weights_key, cfg.decoder, size)
    return Detector(module, "torch", size, list(names), LAYOUTS[layout].decoder, source=cfg.source, key=key,
                    head={"family": "torch", "decoder": cfg.decoder})


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:  # a dict of something else (a config, a history): not weights, whatever its keys say
        raise ModelError(f"{path} is not a state_dict: {', '.join(not_tensors[:3])}"
                         f"{' ...' if len(not_tensors) > 3 else ''} hold(s) no tensor",
                         hint="model.weights must be a file saved with torch.save(model.state_dict(), path)")
    missing, unexpected = [], []
    own = model.state_dict()
    for k in own:
        if k not in state:
            missing.append(k)
    for k in state:
        if k not in own:
            unexpected.append(str(k))
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
    if LAYOUTS[layout].box_axis == 2:
        ok, want = len(shape) == 3 and shape[2] == 6, "(1, K, 6)"
    else:
        ok, want = len(shape) == 3 and shape[1] == 4 + classes, f"(1, {4 + classes}, N)"
    if not ok:
        raise ModelError(f"{source} outputs {shape}, expected {want} for decoder layout {layout!r} and "
                         f"{classes} classes", hint="set model.decoder (a layout or a torch function) and class_names")
