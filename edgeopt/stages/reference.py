"""The reference inference of a detector: torch for a torch module, else the runtime that runs its kind of graph
in-process (found among the registered targets by capability)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeopt.core.registry import TARGETS
from edgeopt.errors import DependencyError, ModelError, first_line
from edgeopt.models.detector import Detector, torch_infer


def reference_infer(detector: Detector, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """``infer(batch) -> output`` of the detector as the user gave it."""
    if detector.kind == "torch":
        return torch_infer(detector.module)
    for name in TARGETS.names:
        target = TARGETS.create(name)
        if detector.kind in target.capabilities.model_kinds:
            try:
                target.check_available()
            except DependencyError:
                continue
            infer = target.reference_infer(detector.model, threads)
            if infer is not None:
                return infer
    raise ModelError(f"no installed runtime runs {detector.kind} models in-process as the reference",
                     hint="install the extra of a target that accepts them (see README)")


def check_reference(detector: Detector) -> None:
    """Run the reference once on a zero image: a model that does not run fails here, before any work."""
    if detector.kind == "torch":
        return  # the source ran its own probe where it had one
    size = detector.input_size
    try:
        reference_infer(detector)(np.zeros((1, 3, size, size), np.float32))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{detector.source} does not run as a 1x3x{size}x{size} detector: "
                         f"{exc.__class__.__name__}: {first_line(exc)}") from None
