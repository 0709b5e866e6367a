"""The one graph walk every target needs, and the kept-float scope built from it.

Walking back from the model's outputs, the first convolution on each path is one of the head's last
convolutions; what lies between them and the outputs is box decode and sigmoid. Quantizing that part (or the
final convolutions) zeroes confidences or coarsens boxes, so the quantization plan keeps it float by default.
Each target supplies how its runtime's graph format names nodes, links them, and which
nodes are convolutions with which kernel; the walk, the projection rule and the scope are the same for all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

Node = TypeVar("Node")


def is_projection(kernel: tuple[int, int, int] | None) -> bool:
    """A 1x1 convolution to one channel (kernel as (out channels, height, width)): a fixed expectation over
    distribution bins at the end of some box decoders (softmax over bins, then weights 0..n-1). It is decode,
    not the head's last layer; treating one as decode only keeps more in float."""
    return kernel is not None and tuple(kernel) == (1, 1, 1)


def head_tail(outputs: Iterable[Node], parents: Callable[[Node], Iterable[Node]], is_conv: Callable[[Node], bool],
              ident: Callable[[Node], Hashable],
              kernel: Callable[[Node], tuple[int, int, int] | None] = lambda n: None,
              depth: int = 1) -> tuple[list[Node], list[Node]]:
    """(convolutions, other nodes): walk back from ``outputs`` through ``depth`` levels of convolutions that are
    not projections (see :func:`is_projection`; ``kernel`` gives a node's (out, h, w) where the format knows it).
    At depth 0 only the decode after the head's last convolutions; at depth 1 those convolutions too; each
    further level adds the convolutions feeding the previous level and every node in between.

    Levels are walked in order, each to its end before the next starts, so a node reachable at two levels counts
    at the nearer one (the fewest convolutions between it and an output)."""
    convs: list[Node] = []
    others: list[Node] = []
    seen: set[Hashable] = set()
    frontier = list(outputs)
    for _ in range(max(depth, 1)):  # depth 0 still walks the decode, and keeps no convolution
        boundary: list[Node] = []  # the convolutions that end this level
        while frontier:
            node = frontier.pop()
            if ident(node) in seen:
                continue
            seen.add(ident(node))
            if is_conv(node) and not is_projection(kernel(node)):
                boundary.append(node)
                continue
            others.append(node)
            frontier.extend(parents(node))
        if depth:
            convs += boundary
            frontier = [parent for node in boundary for parent in parents(node)]
    return convs, others


def kept_float(plan: Any, head_tail_names: Callable[[int], Iterable[str]], names: Iterable[str]) -> list[str]:
    """The names a target's quantizer keeps float under ``plan``: the head's tail to the plan's depth
    (``head_tail_names(depth)``, called only when the plan keeps it) and every name matching one of the plan's
    ``keep_float`` regexes."""
    kept = set(head_tail_names(plan.head_float_depth)) if plan.keep_head_float else set()
    kept |= {n for n in names if any(re.search(p, n) for p in plan.keep_float)}
    return sorted(kept)
