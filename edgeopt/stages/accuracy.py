"""Accuracy measured where it matters: a model's float mAP (cached), and INT8 to an accuracy budget.

``quantize.max_drop`` turns one int8 export into a short search, each step one export and one mAP evaluation
through the target's own runtime on the validation set, keeping the first step within the budget:

1. the plan as configured;
2. when the plan quantizes the head, the decode kept float: boxes and class scores have different ranges, and
   sharing one int8 scale zeroes scores or coarsens boxes; the convolutions before the decode keep int8, each
   with its own scale, so this costs almost no speed;
3. the head guard: the head's last convolutions kept float too;
4. one more level of convolutions from the outputs per step, up to :data:`MAX_DEPTH`.

Every step (what was kept float, mAP, drop, parity verdict) and whether the budget was met go to the manifest.
Walking levels from the outputs is the one fallback all four runtimes can name the same way (each target walks
its own graph, :mod:`edgeopt.targets.graph`); the runtime measures each step.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeopt.core.cache import stable_hash
from edgeopt.core.fingerprint import code_fingerprint
from edgeopt.core.manifest import Manifest, write_manifest
from edgeopt.core.quant import QuantPlan
from edgeopt.eval.predict import validation_map
from edgeopt.models.detector import Detector
from edgeopt.stages.reference import reference_infer

MAX_DEPTH = 3  # levels of convolutions from the outputs the search may keep float: a bounded number of exports


def float_map(ctx: Any, detector: Detector, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """mAP50-95, mAP50 and per-class figures of ``detector`` (torch, or the runtime that runs its graph) on the
    labelled validation set, computed once per (model, data, code) in the cache (``progress`` advances per image
    when it is computed)."""
    key = stable_hash("float-map", detector.key, ctx.data_key, code_fingerprint([__name__]))

    def score(out: Path) -> None:
        figures = validation_map(reference_infer(detector), ctx.validation, detector.input_size, detector.decoder, 8,
                                 progress)
        (out / "map.json").write_text(json.dumps(figures, indent=2))

    path = ctx.cache.build("float-map", key, score)  # no status of its own: callers may show one already
    return json.loads((path / "map.json").read_text())


def search_plans(plan: QuantPlan) -> Iterator[tuple[QuantPlan, str]]:
    """The plans the search tries, in order, with what each keeps float."""
    yield plan, "the plan as configured"
    start = plan.head_float_depth if plan.keep_head_float else -1
    for depth in range(start + 1, MAX_DEPTH + 1):
        what = {0: "the decode (box and score convolutions keep int8, each with its own scale)",
                1: "the head guard: the head's last convolutions and the decode"}.get(
            depth, f"{depth} levels of convolutions from the outputs")
        yield replace(plan, keep_head_float=True, head_float_depth=depth), f"{what} kept float"


def export_to_budget(export: Callable[[QuantPlan], Manifest], measure: Callable[[Manifest], dict[str, Any]],
                     plan: QuantPlan, budget_points: float, float_map50_95: float, out: Path) -> Manifest:
    """Export with each plan of :func:`search_plans` until one loses at most ``budget_points`` of mAP50-95
    against ``float_map50_95`` and does not fail parity; the last export stays in ``out`` either way, with the
    search recorded in its manifest (``quantization.accuracy_search``, with the last step's full mAP figures:
    ``measure`` returns those of :func:`edgeopt.eval.predict.validation_map`, and the benchmark reuses them)."""
    steps: list[dict[str, Any]] = []
    manifest = None
    figures: dict[str, Any] = {}
    search_started = time.perf_counter()
    for candidate, what in search_plans(plan):
        for child in out.iterdir():  # each step starts from an empty bundle directory
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        started = time.perf_counter()
        manifest = export(candidate)
        exported = time.perf_counter()
        kept = manifest.quantization.get("kept_float", manifest.quantization.get("kept_float_tensors", []))
        if steps and kept == steps[-1]["kept_float"]:
            continue  # the same graph as the last step (a runtime with nothing float in the decode): same mAP
        figures = measure(manifest)
        score = figures["map50_95"]
        drop = (float_map50_95 - score) * 100
        steps.append({"step": what, "keep_head_float": candidate.keep_head_float,
                      "head_float_depth": candidate.head_float_depth, "kept_float": kept, "map50_95": score,
                      "drop_points": drop, "parity": manifest.parity["verdict"],
                      "export_seconds": exported - started, "map_seconds": time.perf_counter() - exported})
        if drop <= budget_points and manifest.parity["verdict"] != "failed":  # a NaN drop never meets it
            break
    assert manifest is not None  # search_plans always yields the configured plan
    met = steps[-1]["drop_points"] <= budget_points and steps[-1]["parity"] != "failed"
    manifest.quantization = {**manifest.quantization, "accuracy_search": {
        "max_drop_points": budget_points, "float_map50_95": float_map50_95, "met": met, "steps": steps,
        "seconds": time.perf_counter() - search_started, "figures": figures}}
    return write_manifest(out, manifest)


def search_summary(manifest: Manifest) -> dict[str, Any]:
    """``{"accuracy_search": {...}}`` for a result row: the budget and each step (what it kept float, as a count of
    nodes, its drop, verdict and seconds), or ``{}`` when no search ran."""
    search = (manifest.quantization or {}).get("accuracy_search")
    if not search:
        return {}
    steps = [{"step": s["step"], "kept_float": len(s["kept_float"]), "drop_points": s["drop_points"],
              "parity": s["parity"], "seconds": s["export_seconds"] + s["map_seconds"]} for s in search["steps"]]
    return {"accuracy_search": {"max_drop_points": search["max_drop_points"], "met": search["met"], "steps": steps}}


def search_problem(manifest: Manifest) -> str | None:
    """Why an int8 bundle missed its ``quantize.max_drop``, or None (met, or no search ran)."""
    search = (manifest.quantization or {}).get("accuracy_search")  # None for float bundles
    if not search or search["met"]:
        return None
    last = search["steps"][-1]
    return (f"quantize.max_drop {search['max_drop_points']:g} pt not met: {last['drop_points']:.2f} pt lost after "
            f"{len(search['steps'])} export(s), the last with {last['step']}")
