"""benchmark: latency and memory on each device, mAP on the validation set through the runtime itself.

Bundles are pushed to each device, verified there and timed by their own ``run.py --bench`` in a fresh
process, at each thread count the device's profile lists; their mAP is computed here, in-process through the
same runner code, and optionally also on the device (``map_on_device``: its kernels, scored here). The
reference (the user's model, in torch or in the runtime that runs its graph) is timed here at the config's
thread count and scored by the same decoder.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle.bench import latency_stats, time_calls
from edgeopt.bundle.decode import DecoderConfig, Detections
from edgeopt.config.schema import BenchmarkConfig
from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Device, Stage
from edgeopt.core.paired_timing import paired_speedup, speedup_range, time_beside, timing_window
from edgeopt.core.progress import progress_bar
from edgeopt.data.dataset import DetectionDataset
from edgeopt.devices import device_identity
from edgeopt.errors import DataError, DeviceError
from edgeopt.eval.coco_map import coco_map
from edgeopt.eval.parity import box_agreement
from edgeopt.eval.predict import eval_decoder, predict, validation_map
from edgeopt.models.detector import Detector
from edgeopt.stages.context import Bundle
from edgeopt.stages.accuracy import float_map
from edgeopt.stages.heads import best_head, head_scores
from edgeopt.stages.reference import reference_infer

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class Accuracy:
    """Work item: a bundle's mAP on the validation set, here, through the runner code it ships."""

    bundle: Bundle


@dataclass(frozen=True)
class Beside:
    """Work item: a pruned bundle and its unpruned twin timed in alternation on one device at one thread count."""

    bundle: Bundle
    twin: Bundle
    device: Device
    threads: int


@dataclass(frozen=True)
class Timing:
    """Work item: a bundle's latency/memory on one device at one thread count (and its mAP there, if asked)."""

    bundle: Bundle
    device: Device
    threads: int


def host_map(bundle: Bundle, cfg: BenchmarkConfig, validation: DetectionDataset, out_dir: Path,
             progress: Progress = None) -> dict[str, Any]:
    """mAP figures of ``bundle`` on ``validation``, computed in-process through its runner."""
    record = searched_figures(bundle)  # measured on this bundle and validation set by the int8 search (same key)
    if not record:
        manifest = bundle.manifest
        session = bundle.target.open(bundle.path, manifest.to_dict(), cfg.threads)
        decoder = DecoderConfig(**manifest.output["decoder"])
        record = validation_map(lambda x: session(x)[0], validation, manifest.input["size"], decoder, 1, progress)
    (out_dir / "accuracy.json").write_text(json.dumps(record, indent=2))
    return record


def agreement_with_host(bundle: Bundle, validation: DetectionDataset, found: list[Detections]) -> float:
    """Share of the detections (score >= 0.25, a 0.05 margin) the device's run of ``bundle`` and this machine's
    agree on over ``validation``: the device's kernels judged against the x86 ones, as parity judges artifacts."""
    manifest = bundle.manifest
    session = bundle.target.open(bundle.path, manifest.to_dict(), 1)
    decoder = eval_decoder(DecoderConfig(**manifest.output["decoder"]))
    here = predict(lambda x: session(x)[0], validation, manifest.input["size"], decoder)
    pairs = [box_agreement(h, d, 0.25, 0.05) for h, d in zip(here, found)]
    counted = sum(c for _, c in pairs)
    return sum(m for m, _ in pairs) / counted if counted else 1.0


def bench_artifact(bundle: Bundle, device: Device, threads: int, cfg: BenchmarkConfig,
                   validation: DetectionDataset | None, out_dir: Path) -> dict[str, Any]:
    """Latency/RSS via the bundle's own ``run.py`` on ``device`` after its checksums were verified there; with
    ``map_on_device``, its mAP from detections made on the device (scored here)."""
    _pushed(bundle, device)
    record: dict[str, Any] = dict(device.bench(bundle.path, threads, cfg.warmup, cfg.runs, profile=cfg.profile))
    detect = getattr(device, "detect", None)
    if cfg.map and cfg.map_on_device and validation is not None and detect is not None:
        found = detect(bundle.path, [s.image for s in validation.samples], validation.fingerprint()[:16], threads)
        detections = [Detections(np.asarray(r["boxes"], np.float32).reshape(-1, 4), np.asarray(r["scores"], np.float32),
                                 np.asarray(r["classes"], np.int64)) for r in found]
        metrics = coco_map(validation, detections)
        record.update(device_map50_95=metrics["map50_95"], device_map50=metrics["map50"],
                      device_box_agreement=agreement_with_host(bundle, validation, detections))
    (out_dir / "bench.json").write_text(json.dumps(record, indent=2))
    return record


def _pushed(bundle: Bundle, device: Device) -> None:
    """``bundle`` on ``device``, its checksums verified there."""
    device.push(bundle.path)
    changed = device.verify(bundle.path)
    if changed:
        raise DeviceError(f"bundle {bundle.path.name} differs from its manifest on {device.name}: {', '.join(changed)}",
                          hint="re-run to push it again; never benchmark a bundle that is not what was verified")


def bench_beside_twin(bundle: Bundle, twin: Bundle, device: Device, threads: int, runs: int,
                      out_dir: Path) -> dict[str, Any]:
    """The pruned ``bundle``'s latency as a fraction of its unpruned ``twin``'s on ``device``: the two timed in
    alternation (each round back to back, so a slow spell of the device slows both), more rounds while they
    disagree on which side of 1.0 the pair lies. ``x_unpruned``: the rounds' median ratio."""
    for b in (bundle, twin):
        _pushed(b, device)

    def bench(path: Path, window: tuple[int, int]) -> float:
        return device.bench(path, threads, *window)["latency_ms_median"]

    window = timing_window(bench(twin.path, (5, 10)), runs)
    mine, theirs = time_beside(lambda path: bench(path, window), bundle.path, twin.path, aim=1.0)
    record = {"unpruned_latency_ms": round(statistics.median(theirs), 4),
              "x_unpruned": round(paired_speedup(mine, theirs), 4),
              "x_unpruned_range": speedup_range(mine, theirs), "x_unpruned_rounds": len(mine)}
    (out_dir / "beside.json").write_text(json.dumps(record, indent=2))
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


Item = Accuracy | Timing | Beside | None  # None: the reference


class BenchmarkStage(Stage):
    """The reference row first, then each bundle's mAP here, then every bundle on every device."""

    name = "benchmark"

    def check(self, ctx: Any) -> None:
        validation = ctx.validation
        if validation is not None and ctx.config.benchmark.map and not validation.labelled:
            raise DataError(f"the validation set {validation.source} has no labels",
                            hint="data.validation must be labelled (YOLO labels/ or COCO json) for mAP")

    def items(self, ctx: Any) -> list[Item]:
        scored = ctx.config.benchmark.map and ctx.validation is not None
        timed = [(b, d, t) for b in ctx.bundles for d in ctx.devices for t in ctx.thread_counts(d)
                 if not ctx.missing_runtime(b.target.name, d)]
        return [None, *(Accuracy(b) for b in ctx.bundles if scored), *(Timing(b, d, t) for b, d, t in timed),
                *(Beside(b, ctx.twins[b.path.name], d, t) for b, d, t in timed if b.path.name in ctx.twins)]

    def key(self, ctx: Any, item: Item) -> str:
        bcfg = ctx.config.benchmark.model_dump(exclude={"profile"})  # only the timings of bundles record it
        if item is None:
            return stable_hash("reference", ctx.original.key, ctx.data_key, bcfg, device_identity(ctx.host_info),
                               ctx.versions["torch"], self.code(__name__))
        if isinstance(item, Accuracy):
            return stable_hash("accuracy", item.bundle.path.name, bcfg["threads"], ctx.data_key, self.code(__name__))
        info = device_identity(ctx.device_infos[item.device.name], item.bundle.target.name)
        if isinstance(item, Beside):
            return stable_hash("beside", item.bundle.path.name, item.twin.path.name, bcfg["runs"], item.threads,
                               info, item.device.fingerprint, self.code(__name__, type(item.device).__module__))
        map_there = bcfg["map"] and bcfg["map_on_device"]
        timing = {k: bcfg[k] for k in ("warmup", "runs")}
        if ctx.config.benchmark.profile:  # a key of its own; without it, keys stay those of earlier runs
            timing["profile"] = True
        return stable_hash("bench", item.bundle.path.name, timing, item.threads,
                           ctx.data_key if map_there else None, info, item.device.fingerprint,
                           self.code(__name__, type(item.device).__module__))

    def run(self, ctx: Any, item: Item, out: Path) -> None:
        bcfg = ctx.config.benchmark
        if item is None:
            heads = head_scores(ctx, ctx.original) if bcfg.map else None  # before the bar: own status
            images = 0 if heads or ctx.validation is None or not bcfg.map else len(ctx.validation)
            with progress_bar(ctx.console, "benchmark: torch fp32 reference", images) as advance:
                scores = heads or ({"model": float_map(ctx, ctx.original, advance)}
                                   if bcfg.map and ctx.validation is not None else None)
                bench_reference(ctx.original, bcfg, out, scores)  # the float mAP the int8 search also uses
        elif isinstance(item, Accuracy):
            b = item.bundle
            images = 0 if searched_figures(b) else len(ctx.validation)
            with progress_bar(ctx.console, f"mAP: {b.target.name} {b.precision}", images) as advance:
                host_map(b, bcfg, ctx.validation, out, advance)
        elif isinstance(item, Beside):
            b = item.bundle
            with ctx.console.status(f"benchmark: pruned {b.target.name} {b.precision} beside its unpruned twin on "
                                    f"{item.device.name}, {item.threads} thread(s)"):
                bench_beside_twin(b, item.twin, item.device, item.threads, bcfg.runs, out)
        else:
            b = item.bundle
            with ctx.console.status(f"benchmark: {b.target.name} {b.precision} on {item.device.name}, "
                                    f"{item.threads} thread(s)"):
                bench_artifact(b, item.device, item.threads, bcfg, ctx.validation, out)

    def load(self, ctx: Any, item: Item, out: Path) -> None:
        if item is None:
            ctx.reference = json.loads((out / "bench.json").read_text())
        elif isinstance(item, Accuracy):
            ctx.accuracy[item.bundle.path.name] = json.loads((out / "accuracy.json").read_text())
        elif isinstance(item, Beside):
            ctx.beside[(item.bundle.path.name, item.device.name, item.threads)] = \
                json.loads((out / "beside.json").read_text())
        else:
            key = (item.bundle.path.name, item.device.name, item.threads)
            ctx.bench[key] = json.loads((out / "bench.json").read_text())
