"""``prune.target_speedup``: the pruning ratio chosen by the measured latency of the artifact that ships.

A runtime's latency follows its kernels, not the MAC count: INT8 kernels gain less from a thinner layer than
float ones, and a graph compiler may fuse what pruning thinned. So candidates are measured, not estimated. The
latency of a pruned model depends on its channel counts, not on its weights, so each candidate is measured
straight after pruning (recovery comes once, for the ratio chosen): it is exported to ``prune.latency``'s target
and precision with the run's quantization plan and calibration, at the exported input size, and timed by the
bundle's own runner on that device, in alternation with the unpruned artifact (so a machine that got busier
slows both alike). The ratio is bisected until the candidate's latency is at most ``target_speedup`` times the
unpruned artifact's, less ``prune.latency.margin`` for timing noise. Each measurement is a cache entry keyed by
the candidate's channel counts, the model, the pruning settings, the artifact, the device and the versions, so a
re-run or another target speedup reuses them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Device, Target
from edgeopt.core.paired_timing import (paired_speedup, round_ratios, settled_below, speedup_range, time_beside,
                                        timing_window)
from edgeopt.errors import ConfigError
from edgeopt.models.checkpoint import load_pruned, save_pruned
from edgeopt.models.detector import Detector
from edgeopt.models.pruning import count, prune_once
from edgeopt.stages.export import export_bundle, export_code

STEPS = 6  # bisection steps over [0, HIGHEST]: the chosen ratio is within 0.015 of the smallest that meets it
HIGHEST = 0.9
MULTIPLES = (8, 16, 32, 64)  # channel multiples prune.round_to: auto measures
TIE = 0.03  # a larger multiple is chosen only when it saves at least this much more per MAC (timing noise)
COARSEST = 0.8  # a multiple must remove at least this share of the MACs the finest one removes at the ratio


@dataclass
class LatencyArtifact:
    """The artifact ``prune.target_speedup`` is measured on."""

    target: Target
    section: Any
    precision: str
    device: Device
    threads: int
    runs: int

    def describe(self) -> dict[str, Any]:
        return {"target": self.target.name, "precision": self.precision, "device": self.device.name,
                "threads": self.threads}


def latency_artifact(ctx: Any) -> LatencyArtifact:
    """``prune.latency`` resolved against the run's targets and devices (defaults: the first target, its int8 if
    configured, the first device)."""
    cfg = ctx.config.prune.latency
    section = next(t for t in ctx.config.targets if t.name == cfg.target) if cfg.target else ctx.config.targets[0]
    precision = cfg.precision or ("int8" if "int8" in section.precisions else section.precisions[0])
    devices = {d.name: d for d in ctx.devices}
    if cfg.device is not None and cfg.device not in devices:
        raise ConfigError(f"prune.latency.device '{cfg.device}' is not one of the run's devices "
                          f"({', '.join(devices)})")
    return LatencyArtifact(ctx.targets[section.name], section, precision,
                           devices[cfg.device] if cfg.device else ctx.devices[0], cfg.threads, cfg.runs)


def aimed_at(target_speedup: float, margin: float) -> float:
    """The speed-up the search requires: ``margin`` (a fraction) below ``target_speedup``."""
    return round(target_speedup * (1 - margin), 4)


def search_ratio(measure: Callable[[float], dict[str, Any]], target_speedup: float, margin: float = 0.0,
                 steps: int = STEPS, highest: float = HIGHEST,
                 target_name: str | None = None,
                 start: dict[str, Any] | None = None) -> tuple[float, list[dict[str, Any]]]:
    """The smallest ratio (to the bisection's resolution) whose measured latency is at most ``target_speedup``
    times the unpruned one's, less the ``margin`` fraction, and every measurement made (``measure(ratio)``
    returns ``latency_ms``, ``macs`` and, for a pruned ratio, ``speedup`` if it timed the unpruned artifact
    beside it).

    ``start``: the measurement of the model at ratio 0 when that is not the unpruned one (prune.drop_blocks
    dropped blocks first). When it already meets the target no channel is cut: ratio 0, and the table's row for
    it (after the unpruned one) is marked ``depth_only``.

    Raises ConfigError, with the measurements, when even ``highest`` misses the target (``target_name``: how the
    message names it, default ``prune.target_speedup <target_speedup>``)."""
    aim = aimed_at(target_speedup, margin)
    base = measure(0.0)
    table = [{"ratio": 0.0, **base, "speedup": 1.0}]
    if start is not None:
        speedup = start.get("speedup", start["latency_ms"] / base["latency_ms"])
        if speedup <= aim:  # bisecting on would still cut channels, at its smallest step, for nothing
            return 0.0, [*table, {**start, "ratio": 0.0, "speedup": round(speedup, 4), "depth_only": True}]
    lo, hi, best = 0.0, highest, None
    for _ in range(steps):
        mid = round((lo + hi) / 2, 4)
        figures = measure(mid)
        speedup = figures.get("speedup", figures["latency_ms"] / base["latency_ms"])
        table.append({**figures, "ratio": mid, "speedup": round(speedup, 4)})
        if speedup <= aim:
            best, hi = mid, mid
        else:
            lo = mid
    if best is None:
        measured = ", ".join(f"ratio {r['ratio']:.3f}: {r['speedup']:.2f}x" for r in table[1:])
        aiming = f" (aiming at {aim:g}, prune.latency.margin below it)" if aim != target_speedup else ""
        named = target_name or f"prune.target_speedup {target_speedup:g}"
        raise ConfigError(f"{named}{aiming} is not met up to ratio {lo:.3f} "
                          f"(measured {measured})",
                          hint="raise target_speedup, shrink prune.ignored, or prune for another target")
    return best, sorted(table, key=lambda r: r["ratio"])


def _shipped(ctx: Any, source: Detector, student: Any, scratch: Path) -> Detector:
    """The pruned ``student`` (pruned at ``source``'s input size) in the detector that is exported."""
    if source is ctx.detector:
        return ctx.detector.with_module(student, "latency candidate")
    save_pruned(student, scratch / "candidate.pt")  # the pruned structure at the exported input size
    module = load_pruned(scratch / "candidate.pt", ctx.detector.module, ctx.detector.pruning.normalize)
    return ctx.detector.with_module(module, "latency candidate")


def structure(module: torch.nn.Module) -> list[list[int]]:
    """The shapes of a module's parameters: what its latency depends on (two ratios that round to the same
    channel counts make the same artifact)."""
    return [list(p.shape) for p in module.parameters()]


def measure_candidate(ctx: Any, artifact: LatencyArtifact, source: Detector, student: torch.nn.Module | None,
                      out: Path, unpruned: Path | None, aim: float | None = None,
                      tolerance: float | None = None) -> dict[str, Any]:
    """Export ``student`` (``source`` pruned; None: the model as it is) as ``artifact`` in ``out`` and time it on
    the artifact's device: ``latency_ms`` (the fastest round's median), ``macs``, and for a pruned candidate
    ``speedup``: its latency over the ``unpruned`` bundle's, the two timed in alternation (see
    :func:`time_beside` and :func:`paired_speedup`), so a machine busier now than when the unpruned one was first
    timed slows both alike.
    Every timing lasts long enough for the artifact's size (:func:`timing_window`). The unpruned bundle is kept
    (in its own entry) to be timed beside every candidate; a candidate's bundle only serves its measurement.
    ``aim``: the search's, so that rounds are added while they leave the candidate's side of it open;
    ``tolerance``: rounds are added while the median ratio is not known within it."""
    bundle = out / "bundle"
    bundle.mkdir()
    if student is None:
        detector = ctx.detector
    else:
        detector = _shipped(ctx, source, student, out)
        (out / "candidate.pt").unlink(missing_ok=True)
    export_bundle(artifact.target, detector, artifact.precision, ctx.plan, ctx.calib, bundle,
                  artifact.section.options, ctx.config.parity, {"latency_candidate": student is not None})

    def bench(path: Path, window: tuple[int, int]) -> float:
        return artifact.device.bench(path, artifact.threads, *window)["latency_ms_median"]

    if unpruned is None:  # a short probe sizes the timing window
        mine = [bench(bundle, timing_window(bench(bundle, (5, 10)), artifact.runs))]
    else:
        window = timing_window(json.loads((unpruned.parent / "latency.json").read_text())["latency_ms"],
                               artifact.runs)
        mine, theirs = time_beside(lambda path: bench(path, window), bundle, unpruned, aim, tolerance)
    # the fastest round as the latency: another job on the device only ever adds time, to whichever round it hit
    figures = {"latency_ms": round(min(mine), 4), "macs": count(detector.module, detector.input_size)[0]}
    if unpruned is not None:
        figures.update(unpruned_ms=round(min(theirs), 4), speedup=round(paired_speedup(mine, theirs), 4),
                       speedup_range=speedup_range(mine, theirs), rounds=len(mine),
                       round_speedups=[round(r, 4) for r in round_ratios(mine, theirs)])
        shutil.rmtree(bundle)
    (out / "latency.json").write_text(json.dumps(figures))
    return figures


class CandidateLatency:
    """Measures pruned candidates of ``source`` as the run's latency artifact, each measurement a cache entry
    keyed by the candidate's channel counts (not its ratio: two ratios that prune alike share one measurement,
    so a search never sees two figures for one artifact)."""

    def __init__(self, ctx: Any, source: Detector, code: str, log: Callable[[str], None]) -> None:
        self.ctx, self.source, self.log = ctx, source, log
        self.cfg = ctx.config.prune
        self.allocation: Any = None  # with prune.allocation 'latency': per-layer ratios for a mean ratio
        self.artifact = latency_artifact(ctx)
        settings = self.cfg.model_dump(exclude={"ratio", "round_to", "target_speedup", "target_latency_ms",
                                                "target_macs_reduction", "recovery", "latency"})
        device_info = {k: v for k, v in ctx.device_infos.get(self.artifact.device.name, {}).items() if k != "name"}
        int8 = ctx.plan is not None and self.artifact.precision == "int8"
        self.key = (settings, source.key, ctx.detector.key, self.artifact.describe(), self.artifact.runs,
                    self.artifact.section.options.model_dump(), ctx.plan.to_dict() if int8 else None, ctx.calib_key,
                    device_info, ctx.versions, code, export_code(self.artifact.target))

    def unpruned_bundle(self) -> Path:
        """The unpruned artifact's bundle (its measurement's cache entry keeps it), timed beside each candidate."""
        key = stable_hash("prune-latency", None, *self.key)
        path = self.ctx.cache.build("prune-latency", key, lambda d: measure_candidate(
            self.ctx, self.artifact, self.source, None, d, None))
        return path / "bundle"

    def __call__(self, ratio: float, round_to: int, aim: float | None = None,
                 tolerance: float | None = None) -> dict[str, Any]:
        """``latency_ms``, ``macs`` and (pruned) ``unpruned_ms`` and ``speedup`` of the candidate pruned at
        ``ratio`` with channel counts in multiples of ``round_to`` (see :func:`measure_candidate`); ``aim``: the
        search's, timed for more rounds while they leave the candidate's side of it open; ``tolerance``: timed
        for more rounds while the median ratio is not known within it."""
        if ratio == 0.0:
            return self.timed(None, "unpruned")
        return self.timed(self.prune(ratio, round_to),
                          f"at pruning ratio {ratio:.3f} (channels in multiples of {round_to})", aim, tolerance)

    def overrides(self, ratio: float) -> dict[str, float]:
        """The per-layer ratios the candidate at ``ratio`` is pruned with: the allocation's, if any, then the
        configured prune.overrides (which win)."""
        allocated = self.allocation.overrides(ratio) if self.allocation is not None else {}
        return {**allocated, **self.cfg.overrides}

    def prune(self, ratio: float, round_to: int, overrides: dict[str, float] | None = None) -> torch.nn.Module:
        """``source`` pruned at ``ratio`` with channel counts in multiples of ``round_to``, and per-layer
        ``overrides`` (default: :meth:`overrides`)."""
        cfg = self.cfg.model_copy(update={"overrides": self.overrides(ratio) if overrides is None else overrides})
        calib = self.ctx.calib.images if self.ctx.calib is not None else None
        return prune_once(self.source.module, cfg, ratio, round_to, self.source.input_size, calib,
                          self.source.pruning)

    def timed(self, student: torch.nn.Module | None, label: str, aim: float | None = None,
              tolerance: float | None = None) -> dict[str, Any]:
        """The measurement of ``student`` (None: the unpruned model), from the cache or made now."""
        if student is None:
            path = self.unpruned_bundle().parent
        else:
            unpruned = self.unpruned_bundle()
            key = stable_hash("prune-latency", structure(student), *self.key)
            path = self.ctx.cache.build("prune-latency", key, lambda d: measure_candidate(
                self.ctx, self.artifact, self.source, student, d, unpruned, aim, tolerance))
        figures = json.loads((path / "latency.json").read_text())
        a = self.artifact
        paired = (f", {figures['speedup']:.3f}x the unpruned ({figures['rounds']} rounds, "
                  f"{figures['speedup_range'][0]:.3f}-{figures['speedup_range'][1]:.3f})" if "rounds" in figures else "")
        self.log(f"latency of {a.target.name} {a.precision} on {a.device.name}, {label}: "
                 f"{figures['latency_ms']:.2f} ms{paired}")
        return figures


def speedup_target(measure: CandidateLatency, round_to: int) -> float:
    """prune.target_speedup, or prune.target_latency_ms as a fraction of the unpruned artifact's latency measured
    on the device (its fastest round, as every candidate's).

    Raises ConfigError when the unpruned artifact already runs within target_latency_ms: nothing to prune for."""
    cfg = measure.cfg
    if cfg.target_latency_ms is None:
        return cfg.target_speedup
    unpruned_ms = measure(0.0, round_to)["latency_ms"]
    if cfg.target_latency_ms >= unpruned_ms:
        a = measure.artifact
        raise ConfigError(f"prune.target_latency_ms {cfg.target_latency_ms:g}: the unpruned {a.target.name} "
                          f"{a.precision} artifact already runs in {unpruned_ms:.2f} ms on {a.device.name}",
                          hint="lower prune.target_latency_ms, or drop 'prune' from stages")
    return round(cfg.target_latency_ms / unpruned_ms, 4)


def ratio_for_speedup(measure: CandidateLatency, round_to: int) -> dict[str, Any]:
    """Bisect the pruning ratio against measured latency, aiming prune.latency.margin below the target; the ratio
    chosen, the artifact, the unpruned latency and the table, for prune.json."""
    target = speedup_target(measure, round_to)
    margin = measure.cfg.latency.margin
    aim = aimed_at(target, margin)
    in_ms = measure.cfg.target_latency_ms
    ratio, table = search_ratio(lambda r: measure(r, round_to, aim), target, margin, target_name=(
        f"prune.target_latency_ms {in_ms:g} ({target:g}x of the unpruned artifact)" if in_ms else None),
        start=depth_baseline(measure, round_to))
    chosen = [r for r in table if r["ratio"] == ratio][-1]  # at ratio 0: the depth-only model, after the unpruned
    if chosen.get("depth_only"):
        measure.log("the dropped blocks alone meet the target: no channel is cut")
    rounds = chosen.get("round_speedups")  # none for the unpruned model, nor in a measurement cached before them
    return {**measure.artifact.describe(), "target_speedup": target, "target_latency_ms": in_ms, "aimed_at": aim,
            "ratio": ratio,
            "unpruned_ms": table[0]["latency_ms"], "pruned_ms": chosen["latency_ms"],
            "speedup": chosen["speedup"], "speedup_range": chosen.get("speedup_range"), "rounds": chosen.get("rounds"),
            "settled": None if rounds is None else settled_below(rounds, target),
            "table": table}


def depth_only(measure: CandidateLatency, round_to: int) -> torch.nn.Module | None:
    """The model with its prune.drop_blocks dropped and no channel cut of its own beyond prune.overrides (None
    when no block is dropped)."""
    if not measure.cfg.drop_blocks:
        return None
    return measure.prune(0.0, round_to, dict(measure.cfg.overrides))


def depth_baseline(measure: CandidateLatency, round_to: int,
                   model: torch.nn.Module | None = None) -> dict[str, Any] | None:
    """The measurement of :func:`depth_only`'s model (``model``, when already made; None when no block is
    dropped): what channel cuts are weighed against, so the dropped blocks' time and MACs are not credited to
    each of them."""
    model = model if model is not None else depth_only(measure, round_to)
    if model is None:
        return None
    label = "with the dropped blocks only" + (" (and prune.overrides)" if measure.cfg.overrides else "")
    # compared with what each channel cut saves beyond it: timed to prune.latency.tolerance
    return measure.timed(model, label, tolerance=measure.cfg.latency.tolerance)


def multiple_by_measurement(measure: CandidateLatency, ratio: float,
                            multiples: tuple[int, ...] = MULTIPLES) -> dict[str, Any]:
    """The channel multiple whose pruning the runtime turns into the most time saved per MAC removed, at pruning
    ``ratio``; a larger multiple must beat every smaller one by TIE (timing noise) to be chosen. The figures per
    multiple.

    Saved time per removed MAC, not time per remaining MAC: a small model's fixed cost per operator would make
    the multiple that prunes least look the most efficient. And a multiple too coarse for the model's layers
    (removing less than COARSEST of what the finest removes: 64 on a layer of 96 channels keeps 64 or nothing)
    is never chosen, however efficient its one cut: a larger ratio could not prune it further. With
    prune.drop_blocks, what each multiple removes and saves is counted from the model with the blocks dropped."""
    unpruned = measure(0.0, multiples[0])
    base = depth_baseline(measure, multiples[0]) or {**unpruned, "speedup": 1.0}
    tolerance = measure.cfg.latency.tolerance  # the multiples are compared with each other: timed precisely
    table = [{"round_to": m, **measure(ratio, m, tolerance=tolerance)} for m in multiples]
    for row in table:  # latency as timed beside the unpruned artifact, in the unpruned measurement's scale
        removed = (base["macs"] - row["macs"]) / 1e9
        saved = (base["speedup"] - row["speedup"]) * unpruned["latency_ms"]
        row["saved_ms_per_gmac"] = round(saved / removed, 4) if removed > 0 else None
    finest = base["macs"] - table[0]["macs"]
    eligible = [row for row in table if row["saved_ms_per_gmac"] is not None
                and base["macs"] - row["macs"] >= COARSEST * finest]
    best = eligible[0] if eligible else table[0]  # nothing removes enough: the finest multiple
    for row in eligible[1:]:
        if row["saved_ms_per_gmac"] > best["saved_ms_per_gmac"] * (1 + TIE):
            best = row
    return {**measure.artifact.describe(), "round_to": best["round_to"], "at_ratio": ratio, "table": table}
