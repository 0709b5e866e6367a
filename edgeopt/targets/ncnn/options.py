"""The ``ncnn`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeopt.config.base import Strict, TargetSection


class NcnnOptions(Strict):
    calibration: Literal["kl", "max"] | None = Field(
        None, description="int8 activation thresholds: kl or max (default: from quantize.method, max for minmax)")


class NcnnConfig(TargetSection):
    name: Literal["ncnn"]
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp32"])
    options: NcnnOptions = Field(default_factory=NcnnOptions)
