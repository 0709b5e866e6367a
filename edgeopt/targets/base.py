"""The contract every target runtime implements (one class per runtime, registered by name)."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError, missing_extra


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

    def check_precision(self, precision: str) -> None:
        """Raise a ConfigError for a precision this target does not offer."""
        if precision not in self.precisions:
            raise ConfigError(f"target '{self.name}' has no precision '{precision}'",
                              hint=f"it offers {', '.join(self.precisions)}")

    def end2end_unsupported(self) -> str | None:
        """None if the runtime runs an end-to-end head (in-graph TopK + Gather), else why not."""
        return None

    def source_unsupported(self, detector: Any) -> str | None:
        """None if this target can export ``detector`` (e.g. an ONNX source without a torch module), else why not."""
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


@contextmanager
def captured_output() -> Iterator[Path]:
    """Send the process's stdout/stderr (file descriptors 1 and 2, so C++ logs too) to a temporary file.

    Converters print progress and advice that would bury edgeopt's own output; the file's path is yielded so
    a failure can quote its tail.
    """
    import os
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Path(log.name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a captured log, for error messages."""
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])
