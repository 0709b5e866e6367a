"""The contract every target runtime implements (one class per runtime, registered by name)."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import missing_extra


class Target(ABC):
    """Export a detector for one runtime and run the result.

    ``export`` writes the model file(s) into ``out_dir`` and returns manifest details (model files, input and
    output description, quantization details). ``open`` returns ``run(batch) -> list[np.ndarray]``. The runner
    module named by ``runner`` is copied into each bundle's ``run.py``: it must need only numpy and the runtime.
    """

    name: str
    extra: str
    precisions: tuple[str, ...]
    modules: tuple[str, ...]  # Python packages the target needs
    runner: str  # module path of the numpy-only runner

    def check_available(self) -> None:
        """Raise a DependencyError naming the extra when a required package is missing."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                raise missing_extra(module, self.extra)

    def why_unsupported(self, device: Any) -> str | None:
        """None if ``device`` can run this target, else the reason."""
        return None

    def precision_unsupported(self, precision: str) -> str | None:
        """None if this machine can produce and run ``precision``, else why not (the row is then skipped)."""
        return None

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the runtime and converters used (recorded in manifests and results)."""

    @abstractmethod
    def export(self, detector: Any, precision: str, plan: Any, calib: Any, out_dir: Path,
               options: dict[str, Any]) -> dict[str, Any]:
        """Write the artifact's model file(s) into ``out_dir``; return manifest details."""

    def open(self, bundle_dir: Path, manifest: dict[str, Any], threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Load an artifact with its runtime through the same runner code the bundle ships."""
        runner = importlib.import_module(self.runner)
        return runner.load_session(Path(bundle_dir), manifest, threads)
