"""Structured (channel) pruning of any torch detector with torch-pruning.

torch-pruning's dependency graph decides which channels are coupled (residual adds, concats, upsampling);
edgeopt only chooses what to prune and how much: importance criterion, uniform or global allocation, channel
multiples (so int8 kernels stay efficient), ignored layers (the family's defaults; output convolutions always),
per-layer overrides, or a target MACs reduction found by bisection on the ratio.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import ConfigError, DependencyError
from edgeopt.models.detector import PruningHints


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise DependencyError("the Python package 'torch_pruning' is not installed",
                              hint="pip install 'edgeopt[prune]'") from None
    return torch_pruning


def output_convs(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The convolutions whose outputs are the raw predictions, for any architecture: walk the autograd graph
    back from every head output to the first convolution on each path (what follows is decode; their channel
    counts are fixed by the output format)."""
    params = {id(p): name for name, p in model.named_parameters()}
    with torch.enable_grad():
        stack = [y.grad_fn for y in head_outputs(model, example) if y.grad_fn is not None]
    found: set[str] = set()
    seen: set = set()  # the nodes themselves, not id()s: a freed wrapper's id can be reused by another node
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        parents = [f for f, _ in fn.next_functions if f is not None]
        if type(fn).__name__.startswith("ConvolutionBackward"):
            weights = [params.get(id(f.variable), "") for f in parents if hasattr(f, "variable")]
            weights = [w for w in weights if w.endswith(".weight")]
            if weights:
                found.add(weights[0].rsplit(".", 1)[0])
                continue
        stack.extend(parents)
    return sorted(found)


def head_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every head branch's dense output: what pruning traces and distillation matches. Models with several
    heads (one-to-many and one-to-one) say so with a ``head_outputs`` method."""
    return model.head_outputs(x) if hasattr(model, "head_outputs") else [model(x)]


def kept_channels(channels: int, pruned: int, multiple: int) -> int:
    """Channels left after pruning ``pruned`` of ``channels``, rounded to the *nearest* multiple (at least one)."""
    if channels <= multiple:
        return channels
    return min(channels, max(multiple, int(round((channels - pruned) / multiple)) * multiple))


def _pruner_class():
    """torch-pruning's pruner, rounding kept channels to the nearest multiple of ``round_to``.

    torch-pruning floors them: a 16-channel layer at ratio 0.05 kept 8, so nano models (with many 16- and
    32-channel layers) lost 19% of their MACs and all their accuracy at a 5% ratio (measured).
    """
    tp = _tp()

    class NearestMultiplePruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            return current_channels - kept_channels(current_channels, n_pruned, round_to)

    return NearestMultiplePruner


def count(model: nn.Module, size: int) -> tuple[int, int]:
    """(MACs, parameters) at one ``size`` x ``size`` image."""
    macs, params = _tp().utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, size, size))
    return int(macs), int(params)


def _importance(name: str):
    tp = _tp()
    return {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
            "l2": lambda: tp.importance.MagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.TaylorImportance(),
            "bn_scale": lambda: tp.importance.BNScaleImportance()}[name]()


def prunable_copy(model: nn.Module, hints: PruningHints) -> nn.Module:
    """A copy of ``model`` in the family's prunable form (what is pruned and what its module names refer to)."""
    model = copy.deepcopy(model).eval()
    if hints.normalize is not None:
        hints.normalize(model)
    return model


def _pruner(model: nn.Module, cfg: Any, ratio: float, round_to: int, size: int, hints: PruningHints) -> Any:
    """torch-pruning's pruner over ``model`` (pruned in place by ``step()``) with the config's kept layers,
    overrides, importance and allocation."""
    modules = dict(model.named_modules())
    example = torch.zeros(1, 3, size, size)
    ignored = [modules[n] for n in output_convs(model, example)]
    for pattern in cfg.ignored if cfg.ignored is not None else hints.keep:
        ignored += [m for n, m in modules.items() if fnmatch.fnmatch(n, pattern) and isinstance(m, nn.Conv2d)]
    ratio_dict = {}
    for pattern, r in cfg.overrides.items():
        matched = [m for n, m in modules.items() if fnmatch.fnmatch(n, pattern) and isinstance(m, nn.Conv2d)]
        if not matched:
            raise ConfigError(f"prune.overrides: no convolution matches {pattern!r}")
        ratio_dict.update({m: r for m in matched})
    return _pruner_class()(model, example, importance=_importance(cfg.importance),
                           global_pruning=cfg.allocation == "global", pruning_ratio=ratio,
                           pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored, round_to=round_to,
                           forward_fn=head_outputs)


def prune_once(model: nn.Module, cfg: Any, ratio: float, round_to: int, size: int,
               calib_images: np.ndarray | None, hints: PruningHints = PruningHints()) -> nn.Module:
    """A pruned copy of ``model`` at channel ratio ``ratio``; output convolutions are always kept.

    ``cfg``: the prune config; ``hints``: the family's kept modules (used when the config names none) and its
    rewrite into a prunable form."""
    model = prunable_copy(model, hints)
    pruner = _pruner(model, cfg, ratio, round_to, size, hints)
    if cfg.importance == "taylor":
        if calib_images is None:
            raise ConfigError("prune.importance 'taylor' needs calibration images (the calibrate stage)")
        # first-order sensitivity of the predictions to each channel, on the calibration images (no labels)
        model.zero_grad()
        for i in range(0, min(len(calib_images), 32), 8):
            x = torch.from_numpy(calib_images[i : i + 8].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            sum(y.pow(2).sum() for y in head_outputs(model, x)).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def prunable_blocks(model: nn.Module, cfg: Any, size: int, count_of_blocks: int,
                    hints: PruningHints = PruningHints()) -> list[list[str]]:
    """The convolutions whose output channels pruning cuts (one per torch-pruning group, the group's root; the
    config's kept layers excluded), in module order, split into ``count_of_blocks`` consecutive blocks of about
    equal MACs (fewer when there are fewer groups): the units a latency allocation measures and weighs."""
    model = prunable_copy(model, hints)
    pruner = _pruner(model, cfg, 0.0, 1, size, hints)
    names = {m: n for n, m in model.named_modules()}
    roots = {group[0].dep.target.module for group in pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)}
    convs = [m for m in model.modules() if m in roots and isinstance(m, nn.Conv2d)]
    macs = _conv_macs(model, convs, size)
    total, blocks, done = sum(macs.values()), [], 0.0
    for conv in convs:  # a new block starts each time the running MAC count passes the next equal share
        if not blocks or (done >= total * len(blocks) / count_of_blocks and len(blocks) < count_of_blocks):
            blocks.append([])
        blocks[-1].append(names[conv])
        done += macs[conv]
    return blocks


def _conv_macs(model: nn.Module, convs: list[nn.Conv2d], size: int) -> dict[nn.Conv2d, float]:
    """Each convolution's multiply-accumulates at one ``size`` x ``size`` image."""
    macs: dict[nn.Conv2d, float] = {}

    def record(conv: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        macs[conv] = float(output.numel() * conv.weight[0].numel())

    hooks = [conv.register_forward_hook(record) for conv in convs]
    try:
        with torch.no_grad():
            head_outputs(model, torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return {conv: macs.get(conv, 0.0) for conv in convs}


def output_distortion(model: nn.Module, pruned: nn.Module, images: np.ndarray) -> float:
    """How far ``pruned``'s raw head outputs move from ``model``'s on ``images`` (uint8 NHWC): the squared error
    over the outputs' mean square (0: unchanged). Labels are not needed, and the figure is comparable between
    parts of one model, unlike weight magnitudes."""
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        pairs = zip(head_outputs(model.eval(), x), head_outputs(pruned.eval(), x), strict=True)
        error, scale = 0.0, 0.0
        for y, z in pairs:
            error += float((z - y).pow(2).mean())
            scale += float(y.pow(2).mean())
    return error / scale if scale > 0 else error


def prune_to_target(model: nn.Module, cfg: Any, round_to: int, size: int, calib_images: np.ndarray | None,
                    hints: PruningHints = PruningHints()) -> tuple[nn.Module, float]:
    """Prune at ``cfg.ratio``, or bisect the ratio until MACs fall by ``cfg.target_macs_reduction``."""
    if cfg.target_macs_reduction is None:
        return prune_once(model, cfg, cfg.ratio or 0.0, round_to, size, calib_images, hints), cfg.ratio or 0.0
    base, _ = count(model, size)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(8):
        mid = (lo + hi) / 2
        candidate = prune_once(model, cfg, mid, round_to, size, calib_images, hints)
        reduction = 1 - count(candidate, size)[0] / base
        if reduction >= cfg.target_macs_reduction:
            best, hi = (candidate, mid), mid
        else:
            lo = mid
    if best is None:
        raise ConfigError(f"prune.target_macs_reduction {cfg.target_macs_reduction} is not reachable with the "
                          "ignored layers kept", hint="lower the target or shrink 'ignored'")
    return best
