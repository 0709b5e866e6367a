"""The one graph walk every target needs: from the model's outputs back to the head's last convolutions.

What lies between those convolutions and the outputs is box decode and sigmoid; quantizing it (or the final
convolutions) zeroes confidences or coarsens boxes, so the quantization plan keeps it float by default. Each
target supplies how its own graph format (ONNX, OpenVINO, TFLite, ncnn) names nodes and links them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

Node = TypeVar("Node")


def head_tail(outputs: Iterable[Node], parents: Callable[[Node], Iterable[Node]], is_conv: Callable[[Node], bool],
              ident: Callable[[Node], Hashable]) -> tuple[list[Node], list[Node]]:
    """(last convolutions, decode nodes): walk back from ``outputs``, stopping at each convolution."""
    convs: list[Node] = []
    decode: list[Node] = []
    seen: set[Hashable] = set()
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if ident(node) in seen:
            continue
        seen.add(ident(node))
        if is_conv(node):
            convs.append(node)
            continue
        decode.append(node)
        stack.extend(parents(node))
    return convs, decode
