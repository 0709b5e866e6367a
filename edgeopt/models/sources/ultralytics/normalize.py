"""Graph normalisation before pruning: rewrite blocks torch-pruning cannot follow into output-identical ones.

YOLOv8's C2f (and YOLO11's C3k2) ``chunk`` the output of one 1x1 convolution into two halves; torch-pruning's
dependency graph fails on that split (IndexError). Splitting that convolution (and its BatchNorm) into two
convolutions holding the same weights gives exactly the same outputs, and each half then prunes on its own.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

SPLIT_BLOCKS = ("C2f", "C3k2")


def _split_conv_block(block: nn.Module, sizes: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """Two copies of a conv(+bn+act) block, each keeping one slice of the output channels."""
    halves = []
    start = 0
    for size in sizes:
        half = copy.deepcopy(block)
        conv: nn.Conv2d = half.conv
        sl = slice(start, start + size)
        conv.weight = nn.Parameter(conv.weight.detach()[sl].clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.detach()[sl].clone())
        conv.out_channels = size
        bn = getattr(half, "bn", None)
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight = nn.Parameter(bn.weight.detach()[sl].clone())
            bn.bias = nn.Parameter(bn.bias.detach()[sl].clone())
            bn.running_mean = bn.running_mean[sl].clone()
            bn.running_var = bn.running_var[sl].clone()
            bn.num_features = size
        halves.append(half)
        start += size
    return halves[0], halves[1]


class SplitC2f(nn.Module):
    """C2f without ``chunk``: ``cv1`` is two convolutions (``cv1a``, ``cv1b``) with the original weights."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        hidden = block.c
        self.cv1a, self.cv1b = _split_conv_block(block.cv1, (hidden, hidden))
        self.cv2 = block.cv2
        self.m = block.m
        for attr in ("f", "i", "type", "np"):  # routing attributes of Ultralytics' layer list
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def normalize_for_pruning(model: nn.Module) -> list[str]:
    """Replace every chunking C2f-style block (class name in ``SPLIT_BLOCKS`` with ``cv1``, ``cv2``, ``m``,
    ``c``) by :class:`SplitC2f`, in place; returns the names of the replaced modules."""
    replaced = []
    for name, module in list(model.named_modules()):
        if type(module).__name__ in SPLIT_BLOCKS and all(hasattr(module, a) for a in ("cv1", "cv2", "m", "c")):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = SplitC2f(module)
            if isinstance(parent, (nn.Sequential, nn.ModuleList)):
                parent[int(child)] = new
            else:
                setattr(parent, child, new)
            replaced.append(name)
    return replaced
