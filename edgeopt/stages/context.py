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
    """Inputs read in preflight (config, targets, device, datasets, detector) and stage outputs."""

    config: PipelineConfig
    cache: Cache
    console: Console
    targets: dict[str, Target]
    device: Device
    device_info: dict[str, Any]
    versions: dict[str, str]
    config_hash: str
    data_key: str
    detector: Detector  # the model to export (pruned once the prune stage ran)
    original: Detector  # the user's model: mAP drops are measured against it
    calibration_set: DetectionDataset | None = None
    validation: DetectionDataset | None = None
    recovery_set: DetectionDataset | None = None
    calib: CalibrationSet | None = None
    plan: QuantPlan | None = None
    prune_report: dict[str, Any] | None = None
    bundles: list[Bundle] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # rows that are not bundles: reference, skipped, failed
    reference: dict[str, Any] | None = None
    bench: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundle cache key -> benchmark figures

    @property
    def calib_key(self) -> str | None:
        return self.calib.path.name if self.calib is not None else None
