"""Target runtimes: one package per runtime (registered by name in ``core/registry.py``), each holding
everything about that runtime: its ``Target`` (``target.py``), its config section and options (``options.py``),
its numpy-only bundle runner (``runner.py``) and its quantizer details. Shared by all: the head-tail graph walk,
kept-float scope and projection rule (``graph.py``), and the static ONNX export that ONNX-based runtimes start
from (``onnx_export.py``).

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle``, ``edgeopt.config``, ``edgeopt.data``,
``edgeopt.models``.
"""

from __future__ import annotations

from typing import Any

from edgeopt.core.registry import TARGETS


def get_target(name: str) -> Any:
    """Instantiate the target called ``name``; an unknown name gets a did-you-mean."""
    return TARGETS.create(name)


def default_options(name: str) -> Any:
    """The options model of target ``name`` at its defaults (for calling ``export`` outside a config)."""
    from edgeopt.core.registry import resolve

    return resolve(TARGETS.entry(name).config)(name=name).options
