"""Budgeted search over a sweep's grid with Optuna (random or TPE): each trial picks one value per axis, the point
runs through the shared cache like any other (a repeated point is not run again), and its score is the
``select`` budget's objective over its rows."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from edgeopt.errors import ConfigError, missing_extra
from edgeopt.sweep.pick import pick
from edgeopt.sweep.run import SweepResult, run_point
from edgeopt.sweep.spec import Pick, Point, SweepSection

WORST = 1e12  # a point with no row within the budget (Optuna needs a finite value)


def score(rows: list[dict], references: list[dict], select: Pick) -> float:
    """The point's objective: latency of its fastest row within ``max_drop`` (minimized), or mAP50-95 of its most
    accurate row within ``max_latency_ms`` (maximized); the worst value when none fits."""
    try:
        row, _ = pick([*rows, *references], select)
    except ConfigError:
        return WORST if select.max_drop is not None else 0.0
    return row["latency_ms_median"] if select.max_drop is not None else row["map50_95"]


def run_search(points: list[Point], section: SweepSection, output: Path, console: Console,
               use_cache: bool = True) -> SweepResult:
    """``section.search.trials`` trials of a random or TPE search; every point run is in the result."""
    try:
        import optuna
    except ImportError:
        raise missing_extra("optuna", "search") from None
    select = section.select
    if select is None or (select.max_drop is None and select.max_latency_ms is None):
        raise ConfigError("a random or TPE search optimizes the select: budget",
                          hint="add select: {device: local, max_drop: 1.0} (or max_latency_ms)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = section.search
    sampler = optuna.samplers.TPESampler(seed=cfg.seed) if cfg.method == "tpe" else \
        optuna.samplers.RandomSampler(seed=cfg.seed)
    study = optuna.create_study(direction="minimize" if select.max_drop is not None else "maximize", sampler=sampler)
    by_values = {json.dumps(p.values, sort_keys=True, default=str): p for p in points}
    result = SweepResult(output, list(section.axes))
    scores: dict[str, float] = {}
    for n in range(cfg.trials):
        trial = study.ask()
        # values by index: axes may hold lists or mappings, which Optuna's categorical cannot
        values = {k: v[trial.suggest_categorical(k, list(range(len(v))))] for k, v in section.axes.items()}
        point = by_values[json.dumps(values, sort_keys=True, default=str)]
        if point.id not in scores:
            console.print(f"[bold]search trial {n + 1}/{cfg.trials}[/]: {point.label}")
            rows = run_point(point, result, console, use_cache)
            references = [r for r in result.rows if r["status"] == "reference"]
            scores[point.id] = score(rows, references, select)
        study.tell(trial, scores[point.id])
    return result
