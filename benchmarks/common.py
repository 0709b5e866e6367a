"""Shared by the benchmark scripts: interleaved timing, so machine noise hits every compared row alike."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable

import numpy as np


def bundle_input(manifest: dict, size: int) -> np.ndarray:
    """A random image as the bundle's model takes it (layout, and raw uint8 pixels for a uint8/int8 input), as
    its run.py --bench feeds it: a float NCHW batch would time the runner's conversion too (0.3 ms a call at
    320 px for a TFLite int8 model, a constant that pulls every latency ratio towards 1)."""
    from edgeopt.bundle.main import model_input

    return model_input(manifest, np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin passes over all rows")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per row per round")


def time_interleaved(sessions: dict[Hashable, Callable[[np.ndarray], object]],
                     x: np.ndarray | dict[Hashable, np.ndarray], rounds: int, runs: int,
                     warmup: int = 10) -> dict[Hashable, np.ndarray]:
    """Milliseconds per call for every session, timed in alternating blocks of ``runs`` calls, on ``x`` (one
    input for all, or each session's own: see :func:`bundle_input`)."""
    inputs = x if isinstance(x, dict) else dict.fromkeys(sessions, x)
    times: dict[Hashable, list[float]] = {k: [] for k in sessions}
    for key, run in sessions.items():
        for _ in range(warmup):
            run(inputs[key])
    for _ in range(rounds):
        for key, run in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                run(inputs[key])
                times[key].append((time.perf_counter() - t0) * 1000)
    return {k: np.asarray(v) for k, v in times.items()}
