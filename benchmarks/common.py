"""Shared by the benchmark scripts: interleaved timing, so machine noise hits every compared row alike."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable

import numpy as np


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin passes over all rows")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per row per round")


def time_interleaved(sessions: dict[Hashable, Callable[[np.ndarray], object]], x: np.ndarray, rounds: int,
                     runs: int, warmup: int = 10) -> dict[Hashable, np.ndarray]:
    """Milliseconds per call for every session, timed in alternating blocks of ``runs`` calls."""
    times: dict[Hashable, list[float]] = {k: [] for k in sessions}
    for run in sessions.values():
        for _ in range(warmup):
            run(x)
    for _ in range(rounds):
        for key, run in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                run(x)
                times[key].append((time.perf_counter() - t0) * 1000)
    return {k: np.asarray(v) for k, v in times.items()}
