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
        text, unsafe = str(exc), _unsafe_globals(path)
        if unsafe or "Unsupported global" in text or "GLOBAL" in text:  # a real pickle that references code
            raise ModelError(f"{path} needs arbitrary code to load (a full pickle, referencing "
                             f"{', '.join(unsafe) or 'unknown globals'}), refused",
                             hint="edgeopt loads plain state_dicts; re-save the weights as a state_dict") from None
        raise ModelError(f"{path} is not a readable PyTorch file (corrupt or truncated?)") from None
    except Exception as exc:  # zip, pickle and tensor errors come in many types; all mean the same to the user
        raise ModelError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a dict (found {type(data).__name__})")
    return data


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle references that a weights-only load refuses, read
    without unpickling it (zip format, or the legacy format of torch < 1.6)."""
    try:
        if zipfile.is_zipfile(path):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))[:5]
        allowed = _allowed_globals()
        return [name for name in _legacy_globals(path) if name not in allowed][:5]
    except Exception:  # a damaged file: the names are not readable
        return []


def _allowed_globals() -> set[str]:
    """What torch's weights-only unpickler accepts (the set the zip-format check above filters with)."""
    try:
        from torch import _weights_only_unpickler as unpickler

        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except (ImportError, AttributeError):  # a torch without this private helper: every global is named
        return set()


# a legacy file is five pickles (magic number, protocol, system info, the object, storage keys), then raw data
LEGACY_PICKLES = 5
STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                        "SHORT_BINSTRING"})
NOT_PUSHING = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"})


def _legacy_globals(path: Path) -> list[str]:
    """Every global (``module.name``) the pickles of a legacy-format file reference, in order of appearance:
    ``GLOBAL``/``INST`` carry the name, ``STACK_GLOBAL`` (protocol 4) takes the two strings pushed before it,
    possibly fetched back from the memo."""
    import pickletools

    found: list[str] = []
    with open(path, "rb") as f:
        for _ in range(LEGACY_PICKLES):
            memo: dict[int, object] = {}
            pushed: list[object] = []  # the value each pushing op left (a string, or None for anything else)
            for op, arg, _pos in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(pushed) >= 2 and all(isinstance(v, str) for v in pushed[-2:]):
                    found.append(f"{pushed[-2]}.{pushed[-1]}")
                if op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif op.name not in NOT_PUSHING:
                    pushed.append(arg if op.name in STRING_OPS else None)
    return list(dict.fromkeys(found))


def channel_spec(model: nn.Module) -> dict[str, list[int]]:
    """Per convolution ``[in, out, groups]`` and per BatchNorm ``[features]``: enough to rebuild a pruned model."""
    spec: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            spec[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            spec[name] = [m.num_features]
    return spec


SPEC_HINT = "the checkpoint was not written by edgeopt for this architecture, or was edited; save it again"


def _check_dims(name: str, dims: object, old: nn.Module) -> None:
    """Refuse a spec entry that is not what :func:`channel_spec` writes for ``old``: positive integers, as many
    as the layer kind has, none above the unpruned layer's (pruning only removes channels; a huge count would
    try to allocate it)."""
    limits = ([old.in_channels, old.out_channels, old.groups] if isinstance(old, nn.Conv2d)
              else [old.num_features] if isinstance(old, nn.BatchNorm2d) else None)
    if limits is None:
        raise ModelError(f"channel spec names {name!r}, which is a {type(old).__name__} in this architecture",
                         hint=SPEC_HINT)
    ok = (isinstance(dims, list) and len(dims) == len(limits)
          and all(type(d) is int and 0 < d <= limit for d, limit in zip(dims, limits)))
    if not ok:
        raise ModelError(f"channel spec entry {name!r} is {dims!r}: expected {len(limits)} positive integers "
                         f"no larger than the unpruned layer's {limits}", hint=SPEC_HINT)


def apply_channel_spec(model: nn.Module, spec: dict[str, list[int]]) -> nn.Module:
    """Resize the convolutions and BatchNorms of a freshly built model to a (pruned) channel spec, in place."""
    if not isinstance(spec, dict):
        raise ModelError(f"the channel spec is a {type(spec).__name__}, not a mapping of layer name to channels",
                         hint=SPEC_HINT)
    for name, dims in spec.items():
        parent_name, _, child = str(name).rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            old = parent.get_submodule(child)
        except AttributeError:
            raise ModelError(f"channel spec names {name!r}, which this architecture does not have",
                             hint=SPEC_HINT) from None
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
    """Write a pruned module of any architecture as ``{"format", "channels", "identity", "state_dict"}`` (no
    pickled code); ``identity``: the modules that are ``nn.Identity``, which covers the blocks depth pruning
    dropped (a module the architecture already had as one is set to one again, harmlessly)."""
    return save_checkpoint(path, {"format": PRUNED_FORMAT, "channels": channel_spec(model),
                                  "identity": identity_modules(model), "state_dict": plain_state(model)})


def identity_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that are ``nn.Identity``: what a checkpoint records so that
    :func:`load_into` drops the same blocks from a freshly built architecture."""
    return [name for name, m in model.named_modules() if name and isinstance(m, nn.Identity)]


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


def set_identity(model: nn.Module, names: object) -> None:
    """Replace the named modules of ``model`` by ``nn.Identity``, in place (refusing names it does not have)."""
    modules = dict(model.named_modules())
    if not isinstance(names, list) or not all(isinstance(n, str) and n in modules and n for n in names):
        raise ModelError(f"the checkpoint's identity modules {names!r} are not modules of this architecture",
                         hint="load the pruned model into the architecture it was pruned from")
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, _identity_like(getattr(owner, child)))


def _identity_like(module: nn.Module) -> nn.Identity:
    """An ``nn.Identity`` carrying ``module``'s plain public attributes: a model that routes its layers by
    attributes (which earlier layer a layer reads, its index) still finds them on the identity."""
    identity = nn.Identity()
    for key, value in vars(module).items():
        if not key.startswith("_") and key != "training" and isinstance(value, (bool, int, float, str, list, tuple)):
            setattr(identity, key, value)
    return identity


def load_into(model: nn.Module, data: dict, path: str | Path) -> nn.Module:
    """Drop the checkpoint's identity modules from ``model`` and resize it to its channel spec (a pruned model),
    then load its weights (eval mode)."""
    if not isinstance(data.get("state_dict"), dict):
        raise ModelError(f"{path} holds no state_dict", hint="save the weights with their state_dict")
    try:
        set_identity(model, data.get("identity") or [])
        if data.get("channels"):
            apply_channel_spec(model, data["channels"])
        model.load_state_dict(data["state_dict"])
    except ModelError as exc:
        raise ModelError(f"{path}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # a channel spec or state_dict that does not fit this architecture
        raise ModelError(f"{path}: weights do not match the architecture: {first_line(exc)}") from None
    return model.eval()
