"""The ``onnxruntime`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeopt.config.base import NoOptions, TargetSection


class OnnxRuntimeConfig(TargetSection):
    name: Literal["onnxruntime"]
    precisions: list[Literal["fp32", "int8"]] = Field(default_factory=lambda: ["fp32"])
    options: NoOptions = Field(default_factory=NoOptions, description="ONNX Runtime has no options")
