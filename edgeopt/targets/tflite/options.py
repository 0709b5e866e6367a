"""The ``tflite`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgeopt.config.base import Strict, TargetSection


class TFLiteOptions(Strict):
    layout: Literal["NHWC", "NCHW"] = Field("NHWC", description="Model input layout (NHWC is native for TFLite)")
    input_dtype: Literal["float32", "uint8"] = Field(
        "float32", description="uint8 takes raw RGB pixels (0..255) and scales them inside the model")

    @field_validator("layout", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class TFLiteConfig(TargetSection):
    name: Literal["tflite"]
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp32"])
    options: TFLiteOptions = Field(default_factory=TFLiteOptions)
