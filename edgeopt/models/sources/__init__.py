"""Model sources: each turns a kind of ``model.source`` into a Detector, registered in ``core/registry.py``.

Family knowledge (architectures, checkpoint formats, layer rewrites, what pruning must keep) lives in the
family's own module or package here and nowhere else.

May import: ``edgeopt.errors``, ``edgeopt.core``, ``edgeopt.bundle``, ``edgeopt.config``, ``edgeopt.data``,
``edgeopt.models``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.core.registry import SOURCES
from edgeopt.errors import ModelError

if TYPE_CHECKING:
    from edgeopt.config.schema import ModelConfig
    from edgeopt.models.detector import Detector


def load_model(cfg: ModelConfig, class_names: list[str] | None = None) -> Detector:
    """Build the detector named by the config: the first registered source that claims it loads it.
    Its ``key`` hashes the model bytes and everything that shapes it.

    ``class_names``: fallback names (from the validation set) for sources that carry none.
    """
    for name in SOURCES.names:
        source = SOURCES.create(name)
        if source.claims(cfg):
            return source.load(cfg, class_names)
    raise ModelError(f"model file not found: {cfg.source}", hint="model.source is 'reference', a .pt or .onnx file, "
                     "or 'package.module:factory'")
