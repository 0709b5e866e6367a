"""A sweep file: a pipeline config (inline, or ``sweep.base`` naming one) plus a ``sweep:`` section whose axes are
config keys; the grid of their values gives the points, each a fully validated pipeline config."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeopt.config.load import apply_overrides, explain_errors, load_config
from edgeopt.config.schema import PipelineConfig
from edgeopt.core.cache import stable_hash
from edgeopt.errors import ConfigError, did_you_mean


class Pick(BaseModel):
    """Which point to ship: the fastest passed row on ``device`` within ``max_drop`` mAP50-95 points of the
    reference, or the most accurate within ``max_latency_ms``."""

    model_config = ConfigDict(extra="forbid")

    device: str | None = None
    max_drop: float | None = Field(None, ge=0)
    max_latency_ms: float | None = Field(None, gt=0)


class Search(BaseModel):
    """How points are chosen: every one (grid), or a budgeted random / TPE search (Optuna) that optimizes the
    ``select`` budget's objective: the fastest row within ``max_drop``, or the most accurate within
    ``max_latency_ms``."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random", "tpe"] = "grid"
    trials: int = Field(8, ge=1, description="Points a random or TPE search runs (repeats are not re-run)")
    seed: int = 0


class SweepSection(BaseModel):
    """The ``sweep:`` section."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(None, description="Pipeline config the sweep varies (relative to the sweep file); "
                                               "else the sweep file's own keys")
    axes: dict[str, list[Any]] = Field(description="Config key (dotted) -> the values it takes")
    output: str = Field("runs/sweep", description="Sweep directory: points/, cache/, sweep.json, report.html")
    select: Pick | None = Field(None, description="Pick a point by budget and write its bundle archive")
    executor: Literal["local", "ray"] = Field("local", description="local: one point after another; ray: the "
                                                                   "points' work as Ray tasks, benchmarks in turn")
    address: str | None = Field(None, description="Ray cluster address (default: a local Ray on this machine)")
    search: Search = Field(default_factory=Search)

    @field_validator("axes")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not v:
            raise ValueError("list at least one axis")
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis '{key}' has no values")
        return v


@dataclass
class Point:
    """One combination of axis values and the config it makes."""

    id: str
    values: dict[str, Any]
    config: PipelineConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.values.items())


def read_sweep(path: Path) -> tuple[SweepSection, dict[str, Any], Path]:
    """The sweep section, the base config data and the file the base came from."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "sweep" not in data:
        raise ConfigError(f"{path} has no 'sweep:' section", hint="see configs/sweep.yaml")
    try:
        section = SweepSection.model_validate(data.pop("sweep"))
    except ValidationError as exc:
        problems, hint = [], None
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "sweep"
            problems.append(f"'{key}': {err['msg']}")
            if err["type"] == "extra_forbidden":
                hint = hint or did_you_mean(key, SweepSection.model_fields)
        raise ConfigError(f"invalid sweep section in {path}: " + "; ".join(problems), hint=hint) from None
    base_path = Path(path)
    if section.base:  # the sweep file's own top-level keys override the base config's
        base_path = Path(path).parent / section.base
        load_config(base_path)  # a missing or invalid base is named as such
        data = {**yaml.safe_load(base_path.read_text()), **data}
    return section, data, base_path


def expand(section: SweepSection, base: dict[str, Any], source: Path) -> list[Point]:
    """Every combination of the axes' values as a validated config (a bad value names its axis and point)."""
    keys = list(section.axes)
    points = []
    for combo in itertools.product(*(section.axes[k] for k in keys)):
        values = dict(zip(keys, combo))
        data = apply_overrides(json.loads(json.dumps(base)), [f"{k}={json.dumps(v)}" for k, v in values.items()])
        _drop_noop_prune(data)
        try:
            config = PipelineConfig.model_validate(data)
        except ValidationError as exc:  # named as for a config file (key, value, did-you-mean), with the point
            err = explain_errors(exc, str(source))
            raise ConfigError(f"sweep point {values}: {err.message}", hint=err.hint) from None
        points.append(Point(stable_hash(values, length=10), values, config))
    return points


def _drop_noop_prune(data: dict[str, Any]) -> None:
    """A prune ratio of 0 is the unpruned model: the point runs without the prune stage (no recovery either),
    unless something else prunes it (per-layer overrides, dropped blocks, a latency target)."""
    prune = data.get("prune") or {}
    if prune.get("target_macs_reduction") == 0:
        prune.update(target_macs_reduction=None, ratio=0)
    pruned_otherwise = any(prune.get(k) for k in ("target_macs_reduction", "overrides", "drop_blocks",
                                                   "target_speedup", "target_latency_ms"))
    if prune.get("ratio") == 0 and not pruned_otherwise:
        stages = data.get("stages") or PipelineConfig.model_fields["stages"].default_factory()
        data["stages"] = [s for s in stages if s != "prune"]
