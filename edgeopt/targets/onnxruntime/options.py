"""The ``onnxruntime`` target's config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeopt.config.base import Strict, TargetSection


class OnnxRuntimeOptions(Strict):
    reduce_range: bool | Literal["auto"] = Field("auto", description=(
        "int8 weights in 7 bits. ONNX Runtime's uint8 x int8 kernels on x86-64 CPUs without VNNI (AVX2, AVX-512 "
        "without VNNI) add products in 16 bits, which saturate and cost accuracy (measured: a third-party nano "
        "detector lost 0.53 mAP50-95 points with 8-bit weights, none with 7). auto: on where the CPU edgeopt runs "
        "on is such an x86-64 CPU"))


class OnnxRuntimeConfig(TargetSection):
    name: Literal["onnxruntime"]
    precisions: list[Literal["fp32", "int8"]] = Field(default_factory=lambda: ["fp32"])
    options: OnnxRuntimeOptions = Field(default_factory=OnnxRuntimeOptions)
