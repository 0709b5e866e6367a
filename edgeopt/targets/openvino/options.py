"""The ``openvino`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeopt.config.base import Strict, TargetSection


class OpenVinoOptions(Strict):
    preset: Literal["mixed", "performance"] = Field("mixed", description="NNCF quantization preset")
    subset_size: int | None = Field(None, ge=1, description="Calibration images NNCF uses (default: all)")
    bias_correction: Literal["full", "fast"] = Field("full", description=(
        "NNCF bias correction after int8 calibration: full (each layer's bias corrected with the quantized layers "
        "before it in place; slower export) or fast (each layer alone, NNCF's default)"))


class OpenVinoConfig(TargetSection):
    name: Literal["openvino"]
    precisions: list[Literal["fp32", "fp16", "int8", "bf16"]] = Field(default_factory=lambda: ["fp32"])
    options: OpenVinoOptions = Field(default_factory=OpenVinoOptions)
