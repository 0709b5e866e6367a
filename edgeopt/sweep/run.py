"""Run a sweep: every point through one shared cache, one failed point a failed row (never the end of the
sweep), results rewritten after each point so a killed sweep keeps what it measured and resumes from the cache."""

from __future__ import annotations

import csv
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeopt.core.cache import write_json_atomic
from edgeopt.errors import EdgeoptError
from edgeopt.pipeline import run_pipeline
from edgeopt.report.results import COLUMNS, pareto_front
from edgeopt.sweep.report import write_html
from edgeopt.sweep.spec import Point

POINT_COLUMNS = ("point", "point_label")


@dataclass
class SweepResult:
    """All rows of all points, and what the cache reused and computed."""

    output: Path
    axes: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    reused: int = 0
    computed: int = 0
    computed_entries: list[str] = field(default_factory=list)  # "stage/key" of each entry computed here
    devices: dict[str, Any] = field(default_factory=dict)


def finished_points(points: list[Point], output: Path) -> int:
    """How many points an earlier sweep in ``output`` finished (their work is in the cache: reused, not redone)."""
    return sum(1 for p in points if (output / "points" / p.id / "results.json").is_file())


def run_sweep(points: list[Point], axes: list[str], output: Path, console: Console,
              use_cache: bool = True, executor: str = "local", address: str | None = None) -> SweepResult:
    """Every point in order; rows carry the point's id, label and axis values. With ``executor="ray"`` each
    point's work up to the benchmark runs first as Ray tasks across the cluster's CPUs (into the shared cache);
    the points then finish here one after another, so benchmarks never overlap on a device."""
    result = SweepResult(output, axes)
    cache_dir = output / "cache"
    failed: dict[str, str] = {}
    if executor == "ray":
        from edgeopt.sweep.ray_executor import prepare_on_ray

        failed = prepare_on_ray(points, output, cache_dir, address, use_cache)
    for i, point in enumerate(points, 1):
        console.print(f"[bold]sweep point {i}/{len(points)}[/]: {point.label}")
        run_point(point, result, console, use_cache or executor == "ray", failed.get(point.id))
    return result


def run_point(point: Point, result: SweepResult, console: Console, use_cache: bool,
              failed: str | None = None) -> list[dict[str, Any]]:
    """Run one point into ``result`` (a failure is a failed row, never an exception) and rewrite the sweep's
    files; the point's rows."""
    config = point.config.model_copy(update={"output": str(result.output / "points" / point.id)})
    try:
        if failed:
            raise EdgeoptError(failed)
        run = run_pipeline(config, use_cache=use_cache, console=console, cache_dir=result.output / "cache")
    except EdgeoptError as exc:  # this point only: the sweep goes on
        rows = _failed(point, exc.message, console)
    except Exception as exc:  # an unexpected error on this point's path (a bug): recorded whole, the sweep goes on
        log = result.output / "points" / f"{point.id}.error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        rows = _failed(point, f"unexpected error: {type(exc).__name__}: {exc} (traceback in {log})", console)
    else:
        result.reused += len(run.cache_hits)
        result.computed += len(run.cache_misses)
        result.computed_entries += run.cache_misses
        result.devices.update(run.run_info.get("devices") or {})
        rows = [{**_tags(point), **row} for row in run.records]
    result.rows += rows
    write_sweep(result)
    return rows


def _failed(point: Point, reason: str, console: Console) -> list[dict[str, Any]]:
    """The one row of a point that failed, with its reason."""
    console.print(f"[bold red]point failed:[/] {reason}")
    return [{**_tags(point), "target": "-", "precision": "-", "status": "failed", "reason": reason}]


def _tags(point: Point) -> dict[str, Any]:
    return {"point": point.id, "point_label": point.label, **point.values}


def write_sweep(result: SweepResult, picked: tuple[dict[str, Any], str] | None = None) -> None:
    """sweep.json, sweep.csv and report.html in the sweep directory (``picked``: the row to ship and why)."""
    out = result.output
    out.mkdir(parents=True, exist_ok=True)
    front = pareto_front(result.rows)
    write_json_atomic(out / "sweep.json", {"axes": result.axes, "devices": result.devices, "rows": result.rows,
                                           "pareto": [(r["point"], r["target"], r["precision"], r.get("device"))
                                                      for r in front],
                                           "cache": {"reused": result.reused, "computed": result.computed},
                                           "picked": None if picked is None else {
                                               "point": picked[0]["point"], "target": picked[0]["target"],
                                               "precision": picked[0]["precision"],
                                               "device": picked[0].get("device"), "why": picked[1]}})
    columns = [*POINT_COLUMNS, *result.axes, *COLUMNS]
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)
    write_html(out / "report.html", result.rows, result.axes, front, result.devices, picked)
