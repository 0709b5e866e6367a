"""Checkpoints of any architecture as (channel spec + state_dict): always loadable with ``weights_only=True``."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeopt.core.cache import atomic_write
from edgeopt.errors import ModelError, first_line


def load_checkpoint_dict(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors for a missing, corrupt or pickled-code file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:  # a real pickle that references code
            raise ModelError(f"{path} needs arbitrary code to load (a full pickle, referencing "
                             f"{', '.join(_unsafe_globals(path)) or 'unknown globals'}), refused",
                             hint="edgeopt loads plain state_dicts; re-save the weights as a state_dict") from None
        raise ModelError(f"{path} is not a readable PyTorch file (corrupt or truncated?)") from None
    except Exception as exc:  # zip, pickle and tensor errors come in many types; all mean the same to the user
        raise ModelError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a dict (found {type(data).__name__})")
    return data


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle references, read without unpickling it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))[:5]
    except Exception:  # a legacy or damaged file: the names are not readable
        return []


def channel_spec(model: nn.Module) -> dict[str, list[int]]:
    """Per convolution ``[in, out, groups]`` and per BatchNorm ``[features]``: enough to rebuild a pruned model."""
    spec: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            spec[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            spec[name] = [m.num_features]
    return spec


def _check_dims(name: str, dims: object, old: nn.Module) -> None:
    """Refuse a spec entry that is not what :func:`channel_spec` writes for ``old``: positive integers, as many
    as the layer kind has, none above the unpruned layer's (pruning only removes channels; a huge count would
    try to allocate it)."""
    limits = ([old.in_channels, old.out_channels, old.groups] if isinstance(old, nn.Conv2d)
              else [old.num_features] if isinstance(old, nn.BatchNorm2d) else None)
    if limits is None:
        raise ModelError(f"channel spec names {name!r}, which is a {type(old).__name__} in this architecture")
    ok = (isinstance(dims, list) and len(dims) == len(limits)
          and all(type(d) is int and 0 < d <= limit for d, limit in zip(dims, limits)))
    if not ok:
        raise ModelError(f"channel spec entry {name!r} is {dims!r}: expected {len(limits)} positive integers "
                         f"no larger than the unpruned layer's {limits}")


def apply_channel_spec(model: nn.Module, spec: dict[str, list[int]]) -> nn.Module:
    """Resize the convolutions and BatchNorms of a freshly built model to a (pruned) channel spec, in place."""
    if not isinstance(spec, dict):
        raise ModelError(f"the channel spec is a {type(spec).__name__}, not a mapping of layer name to channels")
    for name, dims in spec.items():
        parent_name, _, child = str(name).rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            old = parent.get_submodule(child)
        except AttributeError:
            raise ModelError(f"channel spec names {name!r}, which this architecture does not have") from None
        _check_dims(name, dims, old)
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(dims[0], dims[1], old.kernel_size, old.stride, old.padding, old.dilation, dims[2],
                            old.bias is not None)
        else:
            new = nn.BatchNorm2d(dims[0], old.eps, old.momentum)
        if isinstance(parent, (nn.Sequential, nn.ModuleList)):
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
    return model


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as detached contiguous tensors (nothing that pickles code)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """torch.save atomically (an interrupted write leaves no half file)."""
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


PRUNED_FORMAT = "edgeopt.pruned/1"


def save_pruned(model: nn.Module, path: str | Path) -> Path:
    """Write a pruned module of any architecture as ``{"format", "channels", "state_dict"}`` (no pickled code)."""
    return save_checkpoint(path, {"format": PRUNED_FORMAT, "channels": channel_spec(model), "state_dict": plain_state(model)})


def load_pruned(path: str | Path, base: nn.Module, normalize: Callable[[nn.Module], Any] | None = None) -> nn.Module:
    """Rebuild a pruned module saved by :func:`save_pruned` from a copy of the unpruned ``base`` it came from:
    the same normalisation as before pruning (``normalize``), layers resized to the saved channel counts, then
    the weights."""
    import copy

    data = load_checkpoint_dict(path)
    if data.get("format") != PRUNED_FORMAT:
        raise ModelError(f"{path} is not an edgeopt pruned-model file (format {data.get('format')!r})")
    model = copy.deepcopy(base)
    if normalize is not None:
        normalize(model)
    return load_into(model, data, path)


def load_into(model: nn.Module, data: dict, path: str | Path) -> nn.Module:
    """Resize ``model`` to the checkpoint's channel spec (a pruned model), then load its weights (eval mode)."""
    if not isinstance(data.get("state_dict"), dict):
        raise ModelError(f"{path} holds no state_dict", hint="save the weights with their state_dict")
    try:
        if data.get("channels"):
            apply_channel_spec(model, data["channels"])
        model.load_state_dict(data["state_dict"])
    except ModelError as exc:
        raise ModelError(f"{path}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # a channel spec or state_dict that does not fit this architecture
        raise ModelError(f"{path}: weights do not match the architecture: {first_line(exc)}") from None
    return model.eval()
