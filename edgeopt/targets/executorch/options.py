"""The ``executorch`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeopt.config.base import Strict, TargetSection


class ExecuTorchOptions(Strict):
    """No options yet: the XNNPACK delegate is the CPU backend on every board ExecuTorch's wheels exist for."""


class ExecuTorchConfig(TargetSection):
    name: Literal["executorch"]
    precisions: list[Literal["fp32", "int8"]] = Field(default_factory=lambda: ["fp32"])
    options: ExecuTorchOptions = Field(default_factory=ExecuTorchOptions)
