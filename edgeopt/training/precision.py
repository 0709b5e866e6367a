"""Whether bfloat16 autocast pays on this CPU."""

from __future__ import annotations

import functools

import torch


@functools.cache
def native_bf16() -> bool:
    """True when oneDNN computes bfloat16 natively here (AVX512 with BF16 or AMX, Arm BF16).

    Only then does bf16 autocast speed CPU training up (~1.7x measured on such a CPU); without it the bf16
    kernels are emulated and a training step of the reference detector is ~7x slower than in float32 (measured
    1.0 s against 7.1 s per step, 320 px, batch 8, 1 thread, AMD EPYC with AVX2 only).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no native bf16 path either
        return False
