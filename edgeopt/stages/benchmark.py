"""benchmark: latency and memory on the device, mAP on the validation set through the runtime itself.

Bundles are timed by their own ``run.py --bench`` on the device, in a fresh process; their mAP is computed
in-process through the same runner code. The reference (the user's model, in torch or in the runtime that
runs its graph) is timed in-process at the same thread count and scored by the same decoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle.bench import latency_stats, time_calls
from edgeopt.bundle.decode import DecoderConfig
from edgeopt.config.schema import BenchmarkConfig
from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Stage
from edgeopt.core.progress import progress_bar
from edgeopt.data.dataset import DetectionDataset
from edgeopt.errors import DataError, DeviceError
from edgeopt.eval.predict import validation_map
from edgeopt.models.detector import Detector
from edgeopt.stages.context import Bundle
from edgeopt.stages.accuracy import float_map
from edgeopt.stages.heads import best_head, head_scores
from edgeopt.stages.reference import reference_infer

Progress = Callable[[int], None] | None


def bench_artifact(bundle: Bundle, device: Any, cfg: BenchmarkConfig, validation: DetectionDataset | None,
                   out_dir: Path, progress: Progress = None) -> dict[str, Any]:
    """Latency/RSS via the bundle's runner on ``device``; mAP in-process through the same runner code."""
    changed = device.verify(bundle.path)
    if changed:
        raise DeviceError(f"bundle {bundle.path} differs from its manifest on {device.name}: {', '.join(changed)}",
                          hint="re-run to rebuild it; never benchmark a bundle that is not what was verified")
    record: dict[str, Any] = dict(device.bench(bundle.path, cfg.threads, cfg.warmup, cfg.runs))
    searched = searched_figures(bundle)
    if cfg.map and validation is not None and searched:
        record.update(searched)  # measured on this bundle and validation set by the int8 search (same export key)
    elif cfg.map and validation is not None:
        manifest = bundle.manifest
        session = bundle.target.open(bundle.path, manifest.to_dict(), cfg.threads)
        decoder = DecoderConfig(**manifest.output["decoder"])
        record.update(validation_map(lambda x: session(x)[0], validation, manifest.input["size"], decoder, 1, progress))
    (out_dir / "bench.json").write_text(json.dumps(record, indent=2))
    return record


def searched_figures(bundle: Bundle) -> dict[str, Any] | None:
    """The mAP figures the int8 search measured on this bundle (``quantize.max_drop``), or None."""
    return (bundle.manifest.quantization or {}).get("accuracy_search", {}).get("figures")


def map_drop_problem(drop: float | None, precision: str, budget: dict[str, float]) -> str | None:
    """Why a row's mAP50-95 ``drop`` (mAP units, against the reference) exceeds its precision's ``budget``
    (mAP points), or None: accuracy is judged, not only agreement with the exported graph."""
    if drop is None or drop * 100 <= budget[precision]:  # written so that a NaN drop is a problem
        return None
    return f"mAP50-95 drop {drop * 100:.2f} pt > budget {budget[precision]:g} pt (parity.max_map_drop)"


def bench_reference(detector: Detector, cfg: BenchmarkConfig, out_dir: Path,
                    scores: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The reference: in-process latency at the benchmark's threads, and its mAP figures (``scores``: those of
    each head it can be exported with, one entry for a detector with one head; the better head's are kept)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        infer = reference_infer(detector, cfg.threads)
        x = np.full((1, 3, detector.input_size, detector.input_size), 114 / 255.0, np.float32)
        stats = latency_stats(time_calls(lambda: infer(x), cfg.warmup, cfg.runs))
        record: dict[str, Any] = {**stats, "threads": cfg.threads, "runs": cfg.runs}
        if scores and len(scores) > 1:
            best = best_head(scores)
            record.update(scores[best], head=best, heads_map50_95={name: s["map50_95"] for name, s in scores.items()})
        elif scores:
            record.update(*scores.values())
    finally:
        torch.set_num_threads(previous)
    (out_dir / "bench.json").write_text(json.dumps(record, indent=2))
    return record


class BenchmarkStage(Stage):
    """The reference row first, then every exported bundle on the device."""

    name = "benchmark"

    def check(self, ctx: Any) -> None:
        validation = ctx.validation
        if validation is not None and ctx.config.benchmark.map and not validation.labelled:
            raise DataError(f"the validation set {validation.source} has no labels",
                            hint="data.validation must be labelled (YOLO labels/ or COCO json) for mAP")

    def items(self, ctx: Any) -> list[Bundle | None]:
        return [None, *ctx.bundles]  # None: the reference

    def _images(self, ctx: Any, item: Bundle | None) -> int:
        """How many images the item's mAP evaluates (its progress bar's length)."""
        measured = item is not None and searched_figures(item)
        return len(ctx.validation) if ctx.validation is not None and ctx.config.benchmark.map and not measured else 0

    def key(self, ctx: Any, item: Bundle | None) -> str:
        bcfg, code = ctx.config.benchmark.model_dump(), self.code(__name__, type(ctx.device).__module__)
        if item is None:
            return stable_hash("reference", ctx.original.key, ctx.data_key, bcfg, ctx.device_info,
                               ctx.versions["torch"], code)
        return stable_hash("bench", item.path.name, bcfg, ctx.data_key, ctx.device_info, code)

    def run(self, ctx: Any, item: Bundle | None, out: Path) -> None:
        bcfg = ctx.config.benchmark
        name = "torch fp32 reference" if item is None else f"{item.target.name} {item.precision} on {ctx.device.name}"
        heads = head_scores(ctx, ctx.original) if item is None and bcfg.map else None  # before the bar: own status
        with progress_bar(ctx.console, f"benchmark: {name}", 0 if heads else self._images(ctx, item)) as advance:
            if item is None:
                scores = heads or ({"model": float_map(ctx, ctx.original, advance)}
                                   if bcfg.map and ctx.validation is not None else None)
                bench_reference(ctx.original, bcfg, out, scores)  # the float mAP the int8 search also uses
            else:
                bench_artifact(item, ctx.device, bcfg, ctx.validation, out, advance)

    def load(self, ctx: Any, item: Bundle | None, out: Path) -> None:
        figures = json.loads((out / "bench.json").read_text())
        if item is None:
            ctx.reference = figures
        else:
            ctx.bench[item.path.name] = figures
