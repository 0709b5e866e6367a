"""The contracts every plug-in implements: Target (one per runtime), Stage (one per verb), Source (one per model
origin) and Device (where bundles run). Each is small; the registry finds implementations by name.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.fingerprint import code_fingerprint
from edgeopt.errors import missing_extra

Run = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Capabilities:
    """What a target offers. ``model_kinds``: the detector kinds it exports (``torch``, ``onnx``); ``heads``:
    the detection heads its runtime runs (``nms``: dense output + NMS in the decoder; ``end2end``: ranked rows,
    top-K in the graph); ``refusals``: why a kind or head is missing (quoted to the user)."""

    precisions: tuple[str, ...]
    model_kinds: tuple[str, ...] = ("torch",)
    heads: tuple[str, ...] = ("nms", "end2end")
    refusals: dict[str, str] = field(default_factory=dict)

    def refuse_kind(self, kind: str) -> str | None:
        """None if a detector of ``kind`` can be exported, else why not."""
        if kind in self.model_kinds:
            return None
        return self.refusals.get(kind, f"it exports {', '.join(self.model_kinds)} models, not {kind}")


@dataclass
class ExportResult:
    """What a target's export wrote: model files, quantization details, overrides of the generic input spec
    (``layout``, ``dtype``, ``scale``) and anything runtime-specific (kept under ``manifest.runtime``)."""

    model_files: list[str]
    quantization: dict[str, Any] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)


class Target(ABC):
    """Export a detector for one runtime and run the result.

    ``runner`` names the target's numpy-only runner module (``load_session(dir, manifest, threads) -> run``,
    optional ``session_options(threads, manifest)`` and ``profile(dir, manifest, threads, batch, warmup, runs) ->
    [{name, type, precision, ms, calls}]``, per-operator milliseconds per inference from the runtime's own profiler,
    raising NotImplementedError with the reason where it has none): it is copied into every bundle as
    ``runner.py``, and edgeopt itself loads artifacts through it, so evaluation runs the code that ships.
    """

    name: str
    extra: str
    modules: tuple[str, ...]  # Python packages the target needs
    # on a device: the modules the bundle runner imports (any one suffices) and the pip distributions
    # `edgeopt device setup` installs for it (the first is pinned to this machine's version where it exists)
    device_modules: tuple[str, ...] = ()
    device_packages: tuple[str, ...] = ()
    # of those, the ones installed without the dependencies their wheels declare (a declared dependency with no
    # build for boards); what they really need is then listed in device_packages
    device_no_deps: tuple[str, ...] = ()
    runner: str
    capabilities: Capabilities

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
               options: Any) -> ExportResult:
        """Write the artifact's model file(s) into ``out_dir``."""

    def runner_module(self) -> Any:
        return importlib.import_module(self.runner)

    def open(self, bundle_dir: Path, manifest: dict[str, Any], threads: int) -> Run:
        """Load an artifact with its runtime through the runner code the bundle ships."""
        return self.runner_module().load_session(Path(bundle_dir), manifest, threads)

    def session_options(self, threads: int, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The runtime settings every measurement uses (recorded in results), if the runner reports them."""
        runner = self.runner_module()
        return runner.session_options(threads, manifest) if hasattr(runner, "session_options") else None

    def reference_infer(self, graph: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray] | None:
        """For a target that runs source graphs in-process (``capabilities.model_kinds``): ``infer(batch)``
        on a detector given as graph bytes, used as the reference of such a detector. None otherwise."""
        return None


class Stage(ABC):
    """One verb of the pipeline. ``items`` are its units of work (one by default); each gets a cache entry under
    ``key``, built by ``run`` into a fresh directory and read back by ``load``, which puts the result in the run
    context. ``check`` runs in preflight, before anything is written."""

    name: str

    def check(self, ctx: Any) -> None:
        """Raise an EdgeoptError for a problem found before any work (a missing extra, a refused model, ...)."""

    def items(self, ctx: Any) -> list[Any]:
        return [None]

    def code(self, *modules: str) -> str:
        """Fingerprint of the code behind this stage's output (``modules`` and what they import), read once
        per stage instance, i.e. once per run, however many items share it."""
        cache: dict[tuple[str, ...], str] = self.__dict__.setdefault("_code", {})
        if modules not in cache:
            cache[modules] = code_fingerprint(list(modules))
        return cache[modules]

    @abstractmethod
    def key(self, ctx: Any, item: Any) -> str:
        """The cache key: hashes this stage's config, its inputs' keys, versions and code."""

    @abstractmethod
    def run(self, ctx: Any, item: Any, out: Path) -> None:
        """Compute the output into ``out``."""

    @abstractmethod
    def load(self, ctx: Any, item: Any, out: Path) -> None:
        """Read a finished output (fresh or cached) into the run context."""

    def execute(self, ctx: Any) -> None:
        """Every item through the cache."""
        for item in self.items(ctx):
            path = ctx.cache.build(self.name, self.key(ctx, item), lambda d, item=item: self.run(ctx, item, d))
            self.load(ctx, item, path)


class Source(ABC):
    """Turns ``model.source`` into a Detector. ``claims`` decides, without side effects, whether this source
    handles the config; the first source in the registry that claims it loads it."""

    @abstractmethod
    def claims(self, cfg: Any) -> bool:
        """True when this source handles ``cfg.source``."""

    @abstractmethod
    def load(self, cfg: Any, class_names: list[str] | None) -> Any:
        """The Detector; ``class_names`` are fallback names (from the validation set)."""

    def exported_decoder(self, metadata: dict[str, str], decoder: Any) -> Any | None:
        """For an ONNX file this family's own exporter wrote (recognised by its ``metadata``): ``decoder`` with the
        family's settings, e.g. its NMS IoU, so mAP compares with the family's own tools. None: not this family's."""
        return None


class Device(ABC):
    """Where bundles run. Latency rows carry ``describe()``; an emulated device is labelled as such."""

    name: str

    emulated: bool = False  # an emulated CPU: its latency is labelled and never used for speed claims
    fingerprint: str = ""  # code run on the device that the import-based code fingerprint cannot see

    @abstractmethod
    def describe(self, runtimes: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
        """What makes a latency figure comparable: CPU, cores, governor, OS, Python (and, on a remote device,
        which of the ``runtimes`` modules import there)."""

    @abstractmethod
    def push(self, bundle: Path) -> str:
        """Make the bundle available on the device (only changed files); returns its path there."""

    @abstractmethod
    def verify(self, bundle: Path) -> list[str]:
        """Files of the pushed bundle whose sha256 differs from its manifest (empty when intact)."""

    @abstractmethod
    def bench(self, bundle: Path, threads: int, warmup: int, runs: int, profile: bool = False) -> dict[str, Any]:
        """Run the pushed bundle's own benchmark (``run.py --bench``) on the device; its JSON figures (with
        ``profile``, also the runtime's per-operator times: ``run.py --bench --profile``)."""

    @abstractmethod
    def run(self, command: list[str], timeout: float = 1800) -> str:
        """Run a command on the device; its stdout (a DeviceError when it fails)."""
