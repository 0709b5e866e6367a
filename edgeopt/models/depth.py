"""Depth pruning of any torch detector: residual blocks removed whole.

A residual block returns its input plus a branch; dropping the branch leaves the input, so the block becomes an
``nn.Identity`` and every shape around it stays. Channel pruning thins operators but keeps each one, and on a
runtime whose time goes largely to per-operator costs (an int8 runtime ran the same 276 operators in a
third-party nano detector pruned by 56% of its MACs, its int8 convolutions' time -28%) only fewer operators buy the
rest: dropping the six residual blocks of that detector's backbone made its int8 artifact 0.76x as slow.

Blocks are found by tracing each module with torch.fx (no family rule), and ranked by how far removing each alone
moves the detector's raw outputs on the calibration images; the least distorting are dropped.
"""

from __future__ import annotations

import copy
import fnmatch
import operator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from edgeopt.models.checkpoint import set_identity
from edgeopt.models.detector import PruningHints
from edgeopt.models.pruning import output_distortion, prunable_copy

ADDS = {operator.add, torch.add, "add"}


def _returns_input_plus_branch(module: nn.Module) -> bool:
    """Whether ``module``'s traced forward has one input and returns it plus something computed by a module."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - any module torch.fx cannot follow is simply not a candidate
        return False
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    result = next(n for n in graph.nodes if n.op == "output").args[0]
    if len(inputs) != 1 or not isinstance(result, fx.Node) or result.target not in ADDS or len(result.args) != 2:
        return False
    branch = [a for a in result.args if a is not inputs[0]]
    return len(branch) == 1 and isinstance(branch[0], fx.Node) and branch[0].op not in ("placeholder", "get_attr")


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that return their input plus a branch holding a convolution, in module
    order (a block inside another one is listed too; dropping the outer one drops it). A wrapper of one such block
    (a Sequential of one) is the block itself: only the block is listed."""
    model = copy.deepcopy(model)  # tracing runs forward on proxies: whatever a forward stores stays on a copy
    found = {name: m for name, m in model.named_modules()
             if name and any(isinstance(c, nn.Conv2d) for c in m.modules()) and _returns_input_plus_branch(m)}
    wrappers = {name for name, m in found.items()
                if len(children := list(m.children())) == 1 and any(children[0] is b for b in found.values())}
    return [name for name in found if name not in wrappers]


def _inside(name: str, outer: str) -> bool:
    return name == outer or name.startswith(outer + ".")


def drop_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    """Replace each named module of ``model`` by ``nn.Identity``, in place."""
    set_identity(model, names)
    return model


def rank_blocks(model: nn.Module, hints: PruningHints, kept: list[str], images: np.ndarray) -> list[dict[str, Any]]:
    """Every residual block of ``model`` in the family's prunable form (``hints``) holding no kept convolution
    (module-name globs ``kept``), with the output distortion of the model without it on ``images`` (uint8 NHWC),
    least distorting first. A block the model cannot run without (its parent calls it for more than a tensor)
    is not a candidate."""
    model = prunable_copy(model, hints)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    ranked = []
    for name in residual_blocks(model):
        if any(_inside(c, name) and fnmatch.fnmatch(c, p) for c in convs for p in kept):
            continue
        try:
            distortion = output_distortion(model, drop_blocks(copy.deepcopy(model), [name]), images)
        except Exception:  # noqa: BLE001 - any failure of the model without the block rules the block out
            continue
        ranked.append({"block": name, "distortion": round(distortion, 6)})
    return sorted(ranked, key=lambda b: b["distortion"])


def choose_blocks(ranked: list[dict[str, Any]], count: int) -> list[str]:
    """The ``count`` least distorting blocks of ``ranked``, none inside another chosen one (fewer when there are
    not that many)."""
    chosen: list[str] = []
    for block in (b["block"] for b in ranked):
        if len(chosen) < count and not any(_inside(block, c) or _inside(c, block) for c in chosen):
            chosen.append(block)
    return chosen


def hints_dropping(hints: PruningHints, names: list[str]) -> PruningHints:
    """``hints`` whose rewrite into the prunable form also drops the blocks ``names`` (valid in that form), so
    every pruned copy made from them is depth-pruned alike."""
    normalize = hints.normalize

    def normalize_and_drop(model: nn.Module) -> None:
        if normalize is not None:
            normalize(model)
        drop_blocks(model, names)

    return replace(hints, normalize=normalize_and_drop)
