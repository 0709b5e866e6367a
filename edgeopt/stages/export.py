"""export: realise the quantization plan on the final graph with each runtime's own tools, and gate on parity.

Each (target, precision) becomes a self-contained bundle directory: model file(s), the bundle code (the same
letterbox, decoder and runner edgeopt evaluates with), and ``edgeopt.json``. The bundle is checked against the
reference before it counts: one outside the parity tolerance stays in the cache for inspection, marked failed,
and is never shipped.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from edgeopt.bundle import PACKAGE_NAME, source_files
from edgeopt.bundle.decode import DecoderConfig
from edgeopt.bundle.letterbox import PAD_VALUE
from edgeopt.config.schema import ParityConfig
from edgeopt.core.cache import stable_hash
from edgeopt.core.capture import captured_output, log_tail
from edgeopt.core.contracts import ExportResult, Stage, Target
from edgeopt.core.manifest import Manifest, read_manifest, verify_bundle, write_manifest
from edgeopt.errors import ConfigError, EdgeoptError, ExportError, first_line
from edgeopt.eval.parity import DEPLOY_DECODER, parity
from edgeopt.eval.predict import validation_map
from edgeopt.models.detector import OUTPUT_DESCRIPTIONS, Detector
from edgeopt.report.pruning import latency_target, measured_on
from edgeopt.stages.context import Bundle
from edgeopt.stages.accuracy import export_to_budget, float_map
from edgeopt.stages.heads import choose_head
from edgeopt.stages.reference import reference_infer


def write_bundle_code(target: Target, out_dir: Path) -> None:
    """Copy the bundle package, ``run.py`` and the target's runner into the bundle directory."""
    files = {**source_files(), f"{PACKAGE_NAME}/runner.py": Path(target.runner_module().__file__)}
    for name, source in files.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out_dir / name)


def _export_model(target: Target, detector: Detector, precision: str, plan: Any, calib: Any, out_dir: Path,
                  options: Any) -> ExportResult:
    """The target's export with the converters' chatter captured (quoted only when they fail)."""
    with captured_output(out_dir) as log:  # inside the cache entry: a killed run's log goes with its temporary
        try:
            return target.export(detector, precision, plan, calib, out_dir, options)
        except ExportError as exc:
            tail = log_tail(log)
            raise ExportError(exc.message + (f" (converter output: {tail})" if tail else ""), exc.hint) from None
        finally:
            log.unlink(missing_ok=True)


def _manifest(target: Target, detector: Detector, precision: str, result: ExportResult,
              lineage: dict[str, Any], head: dict[str, Any]) -> Manifest:
    spec = {"size": detector.input_size, "layout": "NCHW", "dtype": "float32", "color": "RGB", "scale": 1 / 255.0,
            "letterbox": {"keep_aspect": True, "center": True, "pad_value": PAD_VALUE}, **result.input}
    output = {"layout": OUTPUT_DESCRIPTIONS[detector.decoder.layout], "decoder": asdict(detector.decoder)}
    return Manifest(target=target.name, precision=precision, model_files=result.model_files, input=spec,
                    output=output, class_names=detector.class_names, head=head, quantization=result.quantization,
                    runtime={"versions": target.versions(), **result.runtime}, lineage=lineage)


def parity_gate(figures: dict[str, Any], precision: str, cfg: ParityConfig) -> dict[str, Any]:
    """The parity verdict: ``passed``, ``failed`` (a criterion missed) or ``unverified`` (too few detections to
    judge the boxes by); the figures, the tolerance that applied and every problem found."""
    tol = {"min_score_cosine": cfg.min_score_cosine[precision], "max_score_error": cfg.max_score_error[precision],
           "max_box_error": cfg.max_box_error[precision], "min_box_agreement": cfg.min_box_agreement[precision],
           "min_boxes": cfg.min_boxes, "score_margin": cfg.score_margin}
    problems = []
    if not figures["score_cosine"] >= tol["min_score_cosine"]:  # written so that NaN fails
        problems.append(f"score cosine {figures['score_cosine']:.5f} < {tol['min_score_cosine']}")
    if not figures["score_max_abs"] <= tol["max_score_error"]:
        problems.append(f"score error {figures['score_max_abs']:.4g} > {tol['max_score_error']}")
    if not figures["box_max_abs"] <= tol["max_box_error"]:
        problems.append(f"box error {figures['box_max_abs']:.4g} > {tol['max_box_error']} (input sizes)")
    enough = figures["boxes_compared"] >= tol["min_boxes"]
    if enough and not figures["box_agreement"] >= tol["min_box_agreement"]:
        problems.append(f"box agreement {figures['box_agreement']:.3f} < {tol['min_box_agreement']} "
                        f"(at score {figures['threshold']:.3g})")
    verdict = "failed" if problems else "passed" if enough else "unverified"
    if not enough and figures["boxes_compared"] == 0:
        problems.append(f"no detection scoring >= {figures['threshold']:.3g} on the {figures['images']} parity "
                        "image(s) to compare: does the model detect anything on this data (trained, and on images "
                        "like these)?")
    elif not enough:
        problems.append(f"only {figures['boxes_compared']} detection(s) scoring >= {figures['threshold']:.3g} on "
                        f"{figures['images']} parity image(s), fewer than parity.min_boxes {tol['min_boxes']}: "
                        "raise calibrate.parity_images or lower parity.min_boxes")
    return {**figures, "tolerance": tol, "verdict": verdict, "passed": verdict == "passed", "problems": problems}


def export_bundle(target: Target, detector: Detector, precision: str, plan: Any, calib: Any, out_dir: Path,
                  options: Any, parity_cfg: ParityConfig, lineage: dict[str, Any],
                  head: dict[str, Any] | None = None) -> Manifest:
    """Export, write the bundle code and the manifest, run the parity check; returns the manifest.

    ``head``: which head of the model was exported and why (recorded in the manifest)."""
    result = _export_model(target, detector, precision, plan, calib, out_dir, options)
    write_bundle_code(target, out_dir)
    manifest = write_manifest(out_dir, _manifest(target, detector, precision, result, lineage, head or {}))
    try:
        session = target.open(out_dir, manifest.to_dict(), threads=1)
        figures = parity(reference_infer(detector), lambda x: session(x)[0], calib.float_images("parity"),
                         detector.input_size,
                         replace(detector.decoder, score_threshold=DEPLOY_DECODER.score_threshold),
                         margin=parity_cfg.score_margin, min_boxes=parity_cfg.min_boxes)
    except EdgeoptError:
        raise
    except Exception as exc:  # the runtime refused the artifact it was just given: this row fails, the run goes on
        raise ExportError(f"{target.name} {precision}: the exported model does not run: "
                          f"{type(exc).__name__}: {first_line(exc)}") from None
    manifest.parity = parity_gate(figures, precision, parity_cfg)
    return write_manifest(out_dir, manifest)


def pruning_lineage(report: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records of the pruning behind a bundle: how much, and how its channel multiple and
    ratio were chosen (by measurement on a runtime, or as configured)."""
    measured = report.get("round_to_measured")
    latency = report.get("latency")
    return {"ratio": report["ratio"], "macs_reduction": report["macs_reduction"], "round_to": report["round_to"],
            "round_to_chosen_by": f"measured on {measured_on(measured)}" if measured else "config",
            "dropped_blocks": report.get("depth", {}).get("dropped", []),
            "ratio_chosen_by": (f"{latency_target(latency)} measured on "
                                f"{measured_on(latency)}") if latency else "config"}


def export_code(target: Target) -> list[str]:
    """The modules whose code reaches a bundle of ``target`` or its verdict (with what they import): this stage,
    the target and its runner, and every file of the bundle code."""
    return [__name__, type(target).__module__, target.runner,
            *(f"edgeopt.bundle.{source.stem}" for source in source_files().values())]


@dataclass
class ExportItem:
    """One bundle to export: a target's config section, the target, the head variant and the precision."""

    section: Any
    target: Target
    detector: Detector
    head: dict[str, Any]
    precision: str
    unpruned_twin: bool = False  # the unpruned model's bundle a pruned one is timed beside (never shipped)


def usable_cores() -> int:
    """The cores this process may run on (the int8 search measures mAP on all of them); ``os.sched_getaffinity``
    is Linux-only."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _wants_twins(ctx: Any) -> bool:
    """Whether pruned bundles get an unpruned twin to be timed beside (benchmark.unpruned_twin)."""
    return (ctx.prune_report is not None and ctx.config.benchmark.unpruned_twin
            and "benchmark" in ctx.config.stages)


class ExportStage(Stage):
    """One bundle per (target, precision); a failed export or a precision this machine lacks is a row, not a stop."""

    name = "export"

    def check(self, ctx: Any) -> None:
        for section in ctx.config.targets:
            target = ctx.targets[section.name]
            reason = target.capabilities.refuse_kind(ctx.detector.kind)
            if reason:
                raise ConfigError(f"target '{section.name}' cannot export {ctx.detector.source}: {reason}",
                                  hint=f"drop '{section.name}' from targets, or give the torch model (.pt or "
                                       "'module:factory')")
            if "int8" in section.precisions and not {"calibrate", "quantize"} <= set(ctx.config.stages):
                raise ConfigError(f"int8 for '{section.name}' needs the 'calibrate' and 'quantize' stages")
        if "calibrate" not in ctx.config.stages:
            raise ConfigError("the 'export' stage needs the 'calibrate' stage (its parity images)")
        int8 = any("int8" in section.precisions for section in ctx.config.targets)
        if int8 and ctx.config.quantize.max_drop is not None and (ctx.validation is None
                                                                   or not ctx.validation.labelled):
            raise ConfigError("quantize.max_drop measures int8 mAP on the validation set, and there is no "
                              "labelled one", hint="set data.validation to a labelled dataset, or drop max_drop")

    def items(self, ctx: Any) -> list[ExportItem]:
        items = []
        choice = choose_head(ctx, ctx.detector)
        for section in ctx.config.targets:
            target = ctx.targets[section.name]
            caps = target.capabilities
            variant, head = ctx.detector.for_heads(caps.heads, caps.refusals.get("end2end"), choice)
            items += [ExportItem(section, target, variant, head, p) for p in section.precisions]
        return items

    def key(self, ctx: Any, item: ExportItem) -> str:
        int8 = item.precision == "int8"
        code = self.code(*export_code(item.target))
        gate = ctx.config.parity.model_dump(exclude={"max_map_drop"})  # the mAP budget is judged after benchmark
        budget = ctx.config.quantize.max_drop if int8 else None  # the search measures on the validation set
        return stable_hash("export", item.target.name, item.precision, item.section.options.model_dump(),
                           item.detector.key, item.head, ctx.calib_key if int8 else None,
                           ctx.plan.to_dict() if ctx.plan and int8 else None, gate,
                           (budget, ctx.data_key) if budget is not None else None, ctx.versions, code)

    def execute(self, ctx: Any) -> None:
        twin_head = choose_head(ctx, ctx.original) if _wants_twins(ctx) else None  # (cached figures)
        for item in self.items(ctx):
            row = {"target": item.target.name, "precision": item.precision, "device": ctx.device_names}
            skip = item.target.precision_unsupported(item.precision)
            if skip:
                ctx.records.append({**row, "status": "skipped", "reason": skip})
                continue
            key = self.key(ctx, item)
            self._drop_if_changed(ctx, key)
            try:
                budget = ctx.config.quantize.max_drop if item.precision == "int8" else None
                search = f" to a {budget:g} pt mAP budget" if budget is not None else ""
                with ctx.console.status(f"export: {item.target.name} {item.precision}{search}"):
                    path = ctx.cache.build(self.name, key, lambda d, i=item: self.run(ctx, i, d))
            except ExportError as exc:
                ctx.records.append({**row, "status": "failed", "reason": str(exc)})
                ctx.console.print(f"[red]export failed[/] {item.target.name} {item.precision}: {escape(str(exc))}")
                continue
            self.load(ctx, item, path)
            if _wants_twins(ctx):
                self._export_twin(ctx, item, path.name, twin_head)

    def _export_twin(self, ctx: Any, item: ExportItem, pruned_key: str, choice: dict[str, Any] | None) -> None:
        """The bundle a run without the prune stage would export for ``item``'s target and precision (its head
        ``choice``, the same int8 search), for the benchmark stage to time beside the pruned bundle
        ``pruned_key``. A twin that fails to export only leaves that row without the comparison."""
        caps = item.target.capabilities
        variant, head = ctx.original.for_heads(caps.heads, caps.refusals.get("end2end"), choice)
        twin = replace(item, detector=variant, head=head, unpruned_twin=True)
        key = self.key(ctx, twin)
        self._drop_if_changed(ctx, key)
        try:
            with ctx.console.status(f"export: {item.target.name} {item.precision}, the unpruned twin"):
                path = ctx.cache.build(self.name, key, lambda d: self.run(ctx, twin, d))
        except ExportError as exc:
            ctx.console.print(f"[yellow]the unpruned twin of {item.target.name} {item.precision} did not export "
                              f"({escape(str(exc))}): that row is not timed beside it[/]")
            return
        ctx.twins[pruned_key] = Bundle(item.target, item.precision, path, read_manifest(path))

    def _drop_if_changed(self, ctx: Any, key: str) -> None:
        """A cached bundle whose files differ from its manifest is never reused: it is rebuilt."""
        cached = ctx.cache.lookup(self.name, key)
        changed = verify_bundle(cached) if cached is not None else []
        if changed:
            ctx.console.print(f"[yellow]cached bundle {cached} differs from its manifest ({', '.join(changed)}): "
                              "rebuilding it[/]")
            shutil.rmtree(cached)

    def run(self, ctx: Any, item: ExportItem, out: Path) -> None:
        pruned = ctx.prune_report and not item.unpruned_twin
        lineage = {"config_hash": ctx.config_hash, "model": item.detector.source, "model_key": item.detector.key,
                   "calibration_key": ctx.calib_key, "versions": ctx.versions,
                   **({"pruning": pruning_lineage(ctx.prune_report)} if pruned else {})}

        def export(plan: Any) -> Manifest:
            return export_bundle(item.target, item.detector, item.precision, plan, ctx.calib, out,
                                 item.section.options, ctx.config.parity, lineage, item.head)

        budget = ctx.config.quantize.max_drop
        if item.precision != "int8" or budget is None:
            export(ctx.plan)
            return

        def measure(manifest: Manifest) -> dict[str, Any]:
            session = item.target.open(out, manifest.to_dict(), threads=usable_cores())
            decoder = DecoderConfig(**manifest.output["decoder"])
            return validation_map(lambda x: session(x)[0], ctx.validation, manifest.input["size"], decoder)

        export_to_budget(export, measure, ctx.plan, budget, float_map(ctx, item.detector)["map50_95"], out)

    def load(self, ctx: Any, item: ExportItem, out: Path) -> None:
        ctx.bundles.append(Bundle(item.target, item.precision, out, read_manifest(out)))
