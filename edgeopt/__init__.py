"""edgeopt: compress, export, verify and benchmark object detectors for edge devices.

The public API is small and lazy: ``import edgeopt`` loads neither torch nor any runtime.

    >>> import edgeopt
    >>> config = edgeopt.load_config("configs/default.yaml")
    >>> result = edgeopt.run(config)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeopt.core.version import VERSION
from edgeopt.errors import (
    ConfigError,
    DataError,
    DependencyError,
    DeviceError,
    EdgeoptError,
    ExportError,
    ModelError,
    ParityError,
)

__version__ = VERSION

if TYPE_CHECKING:
    from edgeopt.config.schema import PipelineConfig
    from edgeopt.pipeline import RunResult


def load_config(path: str, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML (``overrides`` as ``a.b=value`` strings)."""
    from edgeopt.config.load import load_config as _load

    return _load(path, overrides)


def run(config: PipelineConfig | str, use_cache: bool = True, **kwargs: Any) -> RunResult:
    """Run a pipeline config (object or YAML path) and return its results."""
    from edgeopt.pipeline import run_pipeline

    if isinstance(config, str):
        config = load_config(config)
    return run_pipeline(config, use_cache=use_cache, **kwargs)


def __getattr__(name: str) -> Any:
    """Lazy public names that need torch: ``edgeopt.Detector``."""
    if name == "Detector":
        from edgeopt.models.detector import Detector

        return Detector
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")


__all__ = ["Detector", "ConfigError", "DataError", "DependencyError", "DeviceError", "EdgeoptError", "ExportError",
           "ModelError", "ParityError", "load_config", "run", "__version__"]
