"""Paired timing: two artifacts timed in alternation on one device, each round back to back, so a slow spell of
the device (a shared VM's neighbour, a throttled clock) stretches both and the ratio of a round cancels it. The
pruning search times each candidate beside the unpruned artifact this way, and the benchmark each pruned bundle
beside its unpruned twin.

May import: the standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

ROUNDS = 5  # alternations of unpruned and candidate timings per pair (the median round's ratio is used)
MAX_ROUNDS = 15  # while the rounds disagree on which side of an aim a pair lies, up to this many
PRECISE_ROUNDS = 25  # while a precise measurement's median ratio is not known within its tolerance, up to this many
AGREEING = 0.75  # the share of rounds on the median's side of the aim that settles a candidate
WARMUP_S = 0.2  # seconds of warm-up before each timing: one runtime ran the first ~50 calls of a 2 ms model 15% slower
ROUND_S = 0.5  # seconds per timing, at least: 10 calls of a 2 ms model time mostly warm-up and jitter


def timing_window(latency_ms: float, runs: int) -> tuple[int, int]:
    """Warm-up calls and timed calls for an artifact of about ``latency_ms``: at least WARMUP_S and ROUND_S
    seconds, and at least ``runs`` timed calls."""
    return max(10, math.ceil(WARMUP_S * 1000 / latency_ms)), max(runs, math.ceil(ROUND_S * 1000 / latency_ms))


def time_beside(bench: Callable[[Path], float], bundle: Path, unpruned: Path, aim: float | None = None,
                tolerance: float | None = None) -> tuple[list[float], list[float]]:
    """Median latencies of ``bundle`` and ``unpruned``, timed in alternation by ``bench`` for ROUNDS rounds; with
    an ``aim`` (a ratio) more rounds (up to MAX_ROUNDS) while they leave the side of it ``bundle`` lies on open;
    with a ``tolerance`` (a ratio) more rounds (up to PRECISE_ROUNDS) while the median round's ratio is not known
    within it (:func:`median_uncertainty`)."""
    mine: list[float] = []
    theirs: list[float] = []
    while (len(mine) < ROUNDS
           or (aim is not None and len(mine) < MAX_ROUNDS and undecided(mine, theirs, aim))
           or (tolerance is not None and len(mine) < PRECISE_ROUNDS
               and median_uncertainty(mine, theirs) > tolerance)):
        theirs.append(bench(unpruned))
        mine.append(bench(bundle))
    return mine, theirs


def median_uncertainty(mine: list[float], theirs: list[float]) -> float:
    """Half the width of a ~95% confidence interval of the rounds' median ratio: 1.58 x their interquartile range
    / sqrt(rounds) (the notch of a box plot; McGill, Tukey and Larsen 1978). Robust to the odd slow round, unlike
    a standard deviation."""
    q1, _, q3 = statistics.quantiles(round_ratios(mine, theirs), n=4)
    return 1.58 * (q3 - q1) / math.sqrt(len(mine))


def undecided(mine: list[float], theirs: list[float], aim: float) -> bool:
    """Whether fewer than AGREEING of the rounds' ratios lie on the median's side of ``aim``: on a noisy device
    (rounds of one candidate ranged 0.50-1.10x on a shared VM) the bisection's step would be a coin toss."""
    ratios = round_ratios(mine, theirs)
    below = statistics.median(ratios) <= aim
    return sum((r <= aim) == below for r in ratios) < AGREEING * len(ratios)


def round_ratios(mine: list[float], theirs: list[float]) -> list[float]:
    """Each round's candidate latency over the unpruned one timed beside it."""
    return [m / t for m, t in zip(mine, theirs, strict=True)]


def settled_below(ratios: list[float], target: float) -> bool:
    """Whether at least AGREEING of the rounds' ratios lie at or below ``target``: the same rule that ends the
    rounds, so a candidate whose rounds agreed is not called noisy for one outlier round among them."""
    return sum(r <= target for r in ratios) >= AGREEING * len(ratios)


def paired_speedup(mine: list[float], theirs: list[float]) -> float:
    """The median of the rounds' candidate/unpruned ratios. Each round's two timings ran back to back, so a
    machine's slow spell (a shared VM's neighbour, a throttled clock) stretches both: the ratio of a pair cancels
    it, where the ratio of two fastest rounds taken minutes apart would not."""
    return statistics.median(round_ratios(mine, theirs))


def speedup_range(mine: list[float], theirs: list[float]) -> list[float]:
    """The lowest and highest of the rounds' candidate/unpruned ratios: how far one pairing can be trusted on
    this device (on a shared VM whose speed changed 2x within seconds, one candidate's median pairing was 0.80x
    where its fastest round over the unpruned one's fastest was 0.63x)."""
    ratios = round_ratios(mine, theirs)
    return [round(min(ratios), 4), round(max(ratios), 4)]
