"""The registry: every plug-in by name, as a lazy ``module:Class`` reference.

Only names and module paths live here, so validating a config or printing ``--help`` imports no runtime. This
is the one file outside their own rooms that names runtimes and model families: adding a target is one package
under ``edgeopt/targets/`` plus one line in ``TARGETS`` (and an extra in pyproject.toml); adding a model source
is one module under ``edgeopt/models/sources/`` plus one line in ``SOURCES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgeopt.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Entry:
    """One plug-in: ``ref`` is ``module:attribute``; ``extra`` the pip extra that installs what it needs;
    ``config`` (targets) the ``module:Model`` of its config section, which carries its typed options."""

    name: str
    ref: str
    extra: str | None = None
    config: str | None = None


def resolve(ref: str) -> Any:
    """Import ``module:attribute`` and return the attribute."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """Named plug-ins of one kind, in registration order."""

    def __init__(self, kind: str, entries: list[Entry]) -> None:
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name is a ConfigError with a did-you-mean."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'",
                              hint=did_you_mean(name, self._entries) or f"{self.kind}s: {', '.join(self._entries)}")
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The class (or function) registered as ``name``, imported now."""
        return resolve(self.entry(name).ref)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the class registered as ``name``."""
        return self.load(name)(*args, **kwargs)


TARGETS = Registry("target", [
    Entry("onnxruntime", "edgeopt.targets.onnxruntime.target:OnnxRuntimeTarget", "onnx",
          "edgeopt.targets.onnxruntime.options:OnnxRuntimeConfig"),
    Entry("openvino", "edgeopt.targets.openvino.target:OpenVinoTarget", "openvino",
          "edgeopt.targets.openvino.options:OpenVinoConfig"),
    Entry("tflite", "edgeopt.targets.tflite.target:TFLiteTarget", "tflite",
          "edgeopt.targets.tflite.options:TFLiteConfig"),
    Entry("ncnn", "edgeopt.targets.ncnn.target:NcnnTarget", "ncnn", "edgeopt.targets.ncnn.options:NcnnConfig"),
    Entry("executorch", "edgeopt.targets.executorch.target:ExecuTorchTarget", "executorch",
          "edgeopt.targets.executorch.options:ExecuTorchConfig"),
])

# tried in this order: the first source that claims ``model.source`` builds the Detector
SOURCES = Registry("model source", [
    Entry("reference", "edgeopt.models.sources.reference.source:ReferenceSource"),
    Entry("factory", "edgeopt.models.sources.factory:FactorySource"),
    Entry("onnx", "edgeopt.models.sources.onnx:OnnxSource", "onnx"),
    Entry("ultralytics", "edgeopt.models.sources.ultralytics.source:UltralyticsSource", "ultralytics"),
    Entry("weights", "edgeopt.models.sources.reference.source:WeightsSource"),
])

STAGES = Registry("stage", [
    Entry("calibrate", "edgeopt.stages.calibrate:CalibrateStage"),
    Entry("quantize", "edgeopt.stages.quantize:QuantizeStage"),
    Entry("prune", "edgeopt.stages.prune:PruneStage", "prune"),
    Entry("export", "edgeopt.stages.export:ExportStage"),
    Entry("benchmark", "edgeopt.stages.benchmark:BenchmarkStage"),
])

DEVICES = Registry("device kind", [
    Entry("local", "edgeopt.devices.local:LocalDevice"),
    Entry("ssh", "edgeopt.devices.ssh:SshDevice"),
])
