"""The state of one run, shared by the stages: what was read in preflight and what each stage produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeopt.config.schema import PipelineConfig
from edgeopt.core.cache import Cache
from edgeopt.core.contracts import Device, Target
from edgeopt.core.manifest import Manifest
from edgeopt.core.quant import CalibrationSet, QuantPlan
from edgeopt.data.dataset import DetectionDataset
from edgeopt.models.detector import Detector


@dataclass
class Bundle:
    """An exported bundle in the cache and what it was exported for."""

    target: Target
    precision: str
    path: Path
    manifest: Manifest


@dataclass
class RunContext:
    """Inputs read in preflight (config, targets, devices, datasets, detector) and stage outputs."""

    config: PipelineConfig
    cache: Cache
    console: Console
    targets: dict[str, Target]
    devices: list[Device]  # where bundles are benchmarked, in the config's order
    device_infos: dict[str, dict[str, Any]]  # device name -> its describe()
    host_info: dict[str, Any]  # this machine, where the reference runs and mAP is computed
    versions: dict[str, str]
    config_hash: str
    data_key: str
    detector: Detector  # the model to export (pruned once the prune stage ran)
    original: Detector  # the user's model: mAP drops are measured against it
    prune_source: Detector | None = None  # the user's model at prune.input_size (None: ``original``)
    calibration_set: DetectionDataset | None = None
    validation: DetectionDataset | None = None
    recovery_set: DetectionDataset | None = None
    calib: CalibrationSet | None = None
    plan: QuantPlan | None = None
    prune_report: dict[str, Any] | None = None
    bundles: list[Bundle] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # rows that are not bundles: reference, skipped, failed
    reference: dict[str, Any] | None = None
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundle cache key -> mAP figures (here)
    bench: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)  # (bundle key, device, threads)
    twins: dict[str, Bundle] = field(default_factory=dict)  # pruned bundle key -> the unpruned model's bundle
    beside: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)  # a pruned bundle vs its twin

    @property
    def device_names(self) -> str:
        return ", ".join(d.name for d in self.devices)

    def missing_runtime(self, target: str, device: Device) -> str | None:
        """Why ``device`` cannot run ``target``'s bundles (its runtime does not import there), else None."""
        found = self.device_infos.get(device.name, {}).get("runtimes", {}).get(target)
        if found is None or found.get("ok"):
            return None
        return f"{target}'s runtime is not installed on {device.name} ({found.get('error')}); " \
               f"edgeopt device setup {device.name}"

    def thread_counts(self, device: Device) -> list[int]:
        """The thread counts to benchmark on ``device``: its profile's list, else the config's."""
        profile = getattr(device, "profile", None)
        return list(getattr(profile, "threads", None) or []) or [self.config.benchmark.threads]

    @property
    def calib_key(self) -> str | None:
        return self.calib.path.name if self.calib is not None else None
