"""The pipeline engine: calibrate -> quantize -> prune -> export -> benchmark -> report, over a cache.

Every stage output is cached under ``<output>/cache/<stage>/<key>``, where the key hashes the stage's config,
the keys of its inputs and the versions involved; so an unchanged config recomputes nothing, and a changed
benchmark setting re-runs only the benchmark. Shipped bundles are copied to ``<output>/artifacts``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

import edgeopt
from edgeopt.config.schema import PipelineConfig
from edgeopt.core.artifact import read_manifest
from edgeopt.core.cache import Cache, stable_hash
from edgeopt.core.progress import progress_bar
from edgeopt.errors import ConfigError, DataError, EdgeoptError, ExportError, ParityError


@dataclass
class RunResult:
    """What a run produced."""

    output: Path
    records: list[dict[str, Any]]
    run_info: dict[str, Any]
    cache_hits: list[str] = field(default_factory=list)
    cache_misses: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"the output directory {out} is not writable", hint="choose another with --out")


def _ship(bundle: Path, dest: Path) -> None:
    """Copy a bundle into the run's artifacts/ atomically (copy to a temporary name, then rename)."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle, tmp, ignore=shutil.ignore_patterns("_done"))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def run_pipeline(config: PipelineConfig, use_cache: bool = True, console: Console | None = None) -> RunResult:
    """Run a validated config. Raises EdgeoptError subclasses for user problems before any work is written."""
    from edgeopt.devices import load_device
    from edgeopt.targets import get_target

    console = console or Console(stderr=True)
    out = config.output_dir
    stages = config.stages
    # fail fast, before any output: runtimes present, precisions known, int8 has its inputs
    targets = {}
    for t in config.targets:
        target = get_target(t.name)
        target.check_available()
        for p in t.precisions:
            target.check_precision(p)
            if p == "int8" and not {"calibrate", "quantize"} <= set(stages):
                raise ConfigError(f"int8 for '{t.name}' needs the 'calibrate' and 'quantize' stages")
        targets[t.name] = target
    if "prune" in stages:
        import importlib.util

        from edgeopt.errors import missing_extra

        if importlib.util.find_spec("torch_pruning") is None:
            raise missing_extra("torch_pruning", "prune")
    device = load_device(config.device)
    for name, target in targets.items():
        reason = target.why_unsupported(device)
        if reason:
            raise ConfigError(f"target '{name}' cannot run on device '{device.name}': {reason}")

    # read inputs before writing anything, so a bad dataset leaves no half-made run directory
    from edgeopt.models.detector import load_model
    from edgeopt.stages.calibrate import open_dataset

    calibration_set = open_dataset(config.data.calibration) if "calibrate" in stages else None
    validation = open_dataset(config.data.validation) if config.data.validation else None
    named = validation if validation is not None else calibration_set
    detector = load_model(config.model, named.class_names if named is not None else None)
    if "prune" in stages and detector.module is None:
        raise ConfigError(f"the 'prune' stage needs a torch model; {detector.source} is an ONNX file",
                          hint="drop 'prune' from stages, or give the torch model (.pt or 'module:factory')")
    for name, target in targets.items():
        reason = target.source_unsupported(detector)
        if reason:
            raise ConfigError(f"target '{name}' cannot export {detector.source}: {reason}",
                              hint=f"drop '{name}' from targets, or give the torch model (.pt or 'module:factory')")
    recovery_data = config.prune.recovery.data
    prune_train = open_dataset(recovery_data) if "prune" in stages and recovery_data else None
    if validation is not None and config.benchmark.map and not validation.labelled:
        raise DataError(f"the validation set {validation.source} has no labels",
                        hint="data.validation must be labelled (YOLO labels/ or COCO json) for mAP")

    _check_output_dir(out)
    cache = Cache(out / "cache", enabled=use_cache)
    cache.clean_partial()
    versions = {"edgeopt": edgeopt.__version__, "python": sys.version.split()[0]}
    import torch

    versions["torch"] = torch.__version__
    for target in targets.values():
        versions.update(target.versions())
    config_hash = stable_hash(config.model_dump(), length=12)
    data_key = stable_hash(config.data.model_dump())

    calib = plan = None
    if "calibrate" in stages:
        from edgeopt.stages.calibrate import calibrate, load_calibration

        key = stable_hash("calibrate", config.calibrate.model_dump(), config.data.model_dump(), detector.key)
        with console.status("calibrate: preprocessing calibration images"):
            path = cache.build("calibrate", key, lambda d: calibrate(config.calibrate, calibration_set, validation,
                                                                     detector, d))
        calib = load_calibration(path)
    if "quantize" in stages:
        from edgeopt.stages.quantize import QuantPlan, plan_quantization

        key = stable_hash("quantize", config.quantize.model_dump(), calib.path.name)
        path = cache.build("quantize", key, lambda d: plan_quantization(config.quantize, calib.stats, d))
        plan = QuantPlan.load(path)

    prune_report = None
    original = detector  # mAP drops are measured against the unpruned torch model
    if "prune" in stages:
        from edgeopt.models.checkpoint import load_pruned
        from edgeopt.stages.prune import prune_stage

        multiple = plan.channel_multiple if plan else 8
        key = stable_hash("prune", config.prune.model_dump(), detector.key, multiple, data_key,
                          calib.path.name if calib else None, versions["torch"])
        path = cache.build("prune", key, lambda d: prune_stage(detector, config.prune, multiple, calib, prune_train,
                                                               validation, d, log=console.print))
        prune_report = _read_json(path / "prune.json")
        detector = detector.with_module(load_pruned(path / "pruned_model.pt", detector.module), f"pruned {key}")

    records: list[dict[str, Any]] = []
    bundles: list[tuple[Any, Any, Path, dict]] = []
    if "export" in stages:
        from edgeopt.stages.export import export_bundle

        for t in config.targets:
            target = targets[t.name]
            code = _code_hash(target)
            variant, head = detector.for_target(target)
            for precision in t.precisions:
                lineage = {"config_hash": config_hash, "model": variant.source, "model_key": variant.key,
                           "calibration_key": calib.path.name if calib else None, "versions": versions}
                key = stable_hash("export", t.name, precision, t.options, variant.key, head,
                                  calib.path.name if calib and precision == "int8" else None,
                                  plan.to_dict() if plan and precision == "int8" else None,
                                  config.parity.model_dump(), versions, code)
                base = {"target": t.name, "precision": precision, "device": device.name}
                skip = target.precision_unsupported(precision)
                if skip:
                    records.append({**base, "status": "skipped", "reason": skip})
                    continue
                try:
                    with console.status(f"export: {t.name} {precision}"):
                        path = cache.build("export", key, lambda d: export_bundle(
                            target, variant, precision, plan, calib, d, t.options, config.parity, lineage, head))
                except ExportError as exc:
                    records.append({**base, "status": "failed", "reason": str(exc)})
                    console.print(f"[red]export failed[/] {t.name} {precision}: {escape(str(exc))}")
                    continue
                manifest = read_manifest(path)
                bundles.append((t, target, path, manifest))

    if "benchmark" in stages:
        from edgeopt.stages.benchmark import bench_artifact, bench_reference

        bcfg = config.benchmark
        device_info = device.describe()
        ref_key = stable_hash("reference", original.key, data_key, bcfg.model_dump(), device_info, versions["torch"])
        n_val = len(validation) if validation is not None and bcfg.map else 0
        with progress_bar(console, "benchmark: torch fp32 reference", n_val) as advance:
            ref_path = cache.build("benchmark", ref_key,
                                   lambda d: bench_reference(original, bcfg, validation, d, advance))
        ref = _read_json(ref_path / "bench.json")
        ref_name = "torch" if original.module is not None else "onnx-source"
        records.insert(0, {"target": ref_name, "precision": "fp32", "device": device.name, "status": "reference",
                           "reason": "", **{k: v for k, v in ref.items() if k != "per_class"}, "map50_95_drop": 0.0})
    else:
        ref, device_info = None, device.describe()

    for t, target, path, manifest in bundles:
        par = manifest["parity"]
        size = sum((path / f).stat().st_size for f in manifest["model_files"])
        record = {"target": t.name, "precision": manifest["precision"], "device": device.name,
                  "status": "passed" if par["passed"] else "failed", "reason": "; ".join(par["problems"]),
                  "size_bytes": size, "parity_max_abs": par["max_abs"], "parity_cosine": par["cosine"],
                  "parity_box_agreement": par["box_agreement"], "cache_key": path.name}
        if "benchmark" in stages:
            key = stable_hash("bench", path.name, bcfg.model_dump(), data_key, device_info)
            with progress_bar(console, f"benchmark: {t.name} {manifest['precision']} on {device.name}", n_val) as advance:
                bench_path = cache.build("benchmark", key, lambda d: bench_artifact(
                    target, device, path, manifest, bcfg, validation, d, advance))
            bench = _read_json(bench_path / "bench.json")
            record.update({k: v for k, v in bench.items() if k != "per_class"})
            if ref and ref.get("map50_95") is not None and bench.get("map50_95") is not None:
                record["map50_95_drop"] = ref["map50_95"] - bench["map50_95"]
        record["session_options"] = _session_options(target, config.benchmark.threads, manifest)
        dest = out / "artifacts" / f"{t.name}-{manifest['precision']}"
        if par["passed"]:
            dest.parent.mkdir(exist_ok=True)
            _ship(path, dest)
            record["artifact"] = str(dest)
        else:
            err = ParityError(f"{t.name} {manifest['precision']} failed parity: {record['reason']}",
                              hint="not shipped; see the manifest in " + str(path))
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            shutil.rmtree(dest, ignore_errors=True)  # a bundle shipped by an earlier run is no longer valid
        records.append(record)

    run_info = {"name": config.name, "config_hash": config_hash, "device": device_info, "versions": versions,
                "threads": config.benchmark.threads, "stages": stages, "output": str(out), "prune": prune_report}
    from edgeopt.report.results import write_results

    write_results(out, run_info, records)
    return RunResult(out, records, run_info, cache.hits, cache.misses)


def _code_hash(target) -> str:
    """Hash of the code that shapes a bundle (target, its runner, the run.py template): editing it rebuilds."""
    import importlib
    import inspect

    from edgeopt.core.artifact import build_runner

    module = importlib.import_module(type(target).__module__)
    return stable_hash(inspect.getsource(module), build_runner(target.runner))


def _session_options(target, threads: int, manifest: dict) -> dict | None:
    import importlib

    runner = importlib.import_module(target.runner)
    return runner.session_options(threads, manifest) if hasattr(runner, "session_options") else None


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


__all__ = ["RunResult", "run_pipeline", "EdgeoptError"]
