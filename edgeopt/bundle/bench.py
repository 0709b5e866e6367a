"""Latency statistics and peak memory, shared by bundles on a device and by edgeopt's in-process references."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def time_calls(fn: Callable[[], Any], warmup: int, runs: int) -> np.ndarray:
    """Milliseconds per call of ``fn`` over ``runs`` timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return np.asarray(times)


def latency_stats(times: np.ndarray) -> dict[str, float]:
    """Median, 90th percentile, minimum and mean of per-call milliseconds."""
    return {"latency_ms_median": float(np.median(times)), "latency_ms_p90": float(np.percentile(times, 90)),
            "latency_ms_min": float(times.min()), "latency_ms_mean": float(times.mean())}


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM resets at exec (ru_maxrss may carry the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
