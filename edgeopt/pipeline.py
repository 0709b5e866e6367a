"""The engine: preflight every stage's checks, then run the stages through the cache, then report.

Every stage output is cached under ``<output>/cache/<stage>/<key>`` (see :mod:`edgeopt.core.cache`); bundles
that pass the gate are copied to ``<output>/artifacts``; results go to ``results.json``/``.csv`` and
``report.md``.
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

from edgeopt.core.version import VERSION
from edgeopt.config.schema import PipelineConfig
from edgeopt.core.cache import Cache, copy_tree_atomic, remove_dead_temporaries, stable_hash
from edgeopt.core.contracts import Stage
from edgeopt.core.lock import run_lock
from edgeopt.core.progress import stream_console
from edgeopt.core.manifest import verify_bundle
from edgeopt.core.registry import STAGES, TARGETS
from edgeopt.data.open import open_dataset
from edgeopt.core.contracts import Device
from edgeopt.devices import load_device
from edgeopt.devices.local import LocalDevice
from edgeopt.errors import ConfigError, DeviceError, EdgeoptError, ParityError
from edgeopt.models.sources import load_model
from edgeopt.report.profile import Profile
from edgeopt.report.pruning import pruning_warnings
from edgeopt.report.results import PARITY_COLUMNS, PROFILE_TOP, write_results
from edgeopt.stages.context import Bundle, RunContext
from edgeopt.stages.accuracy import search_problem, search_summary
from edgeopt.stages.benchmark import map_drop_problem
from edgeopt.stages.reference import check_reference


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
        """Rows not shipped for a reason the user must see: failed, or unverified by the gate."""
        return [r for r in self.records if r["status"] in ("failed", "unverified")]


def run_pipeline(config: PipelineConfig, use_cache: bool = True, console: Console | None = None,
                 cache_dir: Path | None = None) -> RunResult:
    """Run a validated config. Raises EdgeoptError subclasses for user problems before any work is written.
    ``cache_dir`` (default ``<output>/cache``) may be shared by runs: entries are content-addressed."""
    stages: list[Stage] = [STAGES.create(name) for name in config.stages]
    ctx = preflight(config, stages, Cache(cache_dir or config.output_dir / "cache", enabled=use_cache),
                    console or stream_console(stderr=True))
    with run_lock(config.output_dir):
        ctx.cache.clean_partial()
        remove_dead_temporaries((config.output_dir / "artifacts").glob(".*.tmp-*"))  # a run killed while shipping
        for stage in stages:
            stage.execute(ctx)
        return _finish(ctx)


def _finish(ctx: RunContext) -> RunResult:
    """Rows for the reference, the skipped and failed exports and every bundle (shipping those that pass);
    results files."""
    config = ctx.config
    records = [*_reference_rows(ctx), *ctx.records, *(row for b in ctx.bundles for row in _bundle_rows(ctx, b))]
    run_info = {"name": config.name, "config_hash": ctx.config_hash, "device": ctx.host_info,
                "devices": ctx.device_infos,
                "versions": ctx.versions, "threads": config.benchmark.threads, "stages": config.stages,
                "output": str(config.output_dir), "prune": ctx.prune_report,
                "quantize": {"outlier_layers": ctx.plan.outlier_layers} if ctx.plan else None}
    write_results(config.output_dir, run_info, records)
    for warning in pruning_warnings(ctx.prune_report, records):
        ctx.console.print(f"[yellow]{escape(warning)}[/]")
    return RunResult(config.output_dir, records, run_info, ctx.cache.hits, ctx.cache.misses)


def preflight(config: PipelineConfig, stages: list[Stage], cache: Cache, console: Console) -> RunContext:
    """Read every input and run every stage's checks; only then create the run directory."""
    targets = {t.name: TARGETS.create(t.name) for t in config.targets}
    for target in targets.values():
        target.check_available()
    devices = [load_device(spec) for spec in config.devices]
    names = [d.name for d in devices]
    if len(set(names)) != len(names):  # rows and measurements are keyed by the device's name
        raise ConfigError(f"two device profiles share a name: {', '.join(names)}",
                          hint="give each profile its own `name:`")
    for device in devices:
        for name, target in targets.items():
            reason = target.why_unsupported(device)
            if reason:
                raise ConfigError(f"target '{name}' cannot run on device '{device.name}': {reason}")
    ctx = _read_inputs(config, targets, devices, cache, console)
    for stage in stages:
        stage.check(ctx)
    _check_output_dir(config.output_dir)
    return ctx


def _read_inputs(config: PipelineConfig, targets: dict, devices: list[Device], cache: Cache,
                 console: Console) -> RunContext:
    """Datasets and the detector, read before anything is written (a bad input leaves no half-made run)."""
    calibration = open_dataset(config.data.calibration) if "calibrate" in config.stages else None
    validation = open_dataset(config.data.validation) if config.data.validation else None
    named = validation if validation is not None else calibration
    detector = load_model(config.model, named.class_names if named is not None else None)
    check_reference(detector)
    recovery = config.prune.recovery.data
    pruning = "prune" in config.stages
    recovery_set = open_dataset(recovery) if pruning and recovery else None
    prune_size = config.prune.input_size
    prune_source = None
    if pruning and prune_size and prune_size != detector.input_size:  # read now: a size the model refuses fails here
        prune_source = load_model(config.model.model_copy(update={"input_size": prune_size}), detector.class_names)
    # the data every stage reads; the recovery set only shapes the prune stage (its own key), so an unpruned run
    # and a pruned one share calibration, references and float mAP
    data_key = stable_hash(config.data.model_dump(),
                           *(d.fingerprint() if d is not None else None for d in (calibration, validation)))
    return RunContext(config=config, cache=cache, console=console, targets=targets, devices=devices,
                      device_infos=_describe(devices, targets, "benchmark" in config.stages),
                      host_info=LocalDevice().describe(), versions=_versions(targets),
                      config_hash=stable_hash(config.model_dump(), length=12),
                      data_key=data_key, detector=detector, original=detector, prune_source=prune_source,
                      calibration_set=calibration, validation=validation, recovery_set=recovery_set)


def _describe(devices: list[Device], targets: dict, benchmarking: bool) -> dict[str, dict[str, Any]]:
    """Each device's description. A remote device lacking every configured target's runtime is refused here,
    before any work (``edgeopt device setup`` installs them); one lacking some gets skipped rows for those."""
    infos = {}
    for device in devices:
        if not benchmarking and not isinstance(device, LocalDevice):  # nothing to run there: do not connect
            infos[device.name] = {"name": device.name, "emulated": device.emulated}
            continue
        info = device.describe({name: t.device_modules for name, t in targets.items()})
        missing = {name: r.get("error") for name, r in info.get("runtimes", {}).items() if not r.get("ok")}
        if missing and len(missing) == len(targets) and benchmarking:
            raise DeviceError(f"device '{device.name}' has none of the configured runtimes: "
                              + "; ".join(f"{k}: {v}" for k, v in missing.items()),
                              hint=f"edgeopt device setup {device.name} (installs them into a venv there)")
        infos[device.name] = info
    return infos


def _versions(targets: dict) -> dict[str, str]:
    import torch

    versions = {"edgeopt": VERSION, "python": sys.version.split()[0], "torch": torch.__version__}
    for target in targets.values():
        versions.update(target.versions())
    return versions


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"the output directory {out} is not writable", hint="choose another with --out")


def _reference_rows(ctx: RunContext) -> list[dict[str, Any]]:
    if ctx.reference is None:
        return []
    name = "torch" if ctx.original.kind == "torch" else f"{ctx.original.kind}-source"
    figures = {k: v for k, v in ctx.reference.items() if k != "per_class"}
    return [{"target": name, "precision": "fp32", "device": ctx.host_info["name"], "status": "reference", "reason": "",
             **figures, "map50_95_drop": 0.0 if figures.get("map50_95") is not None else None}]


def _export_drop(ctx: RunContext, bench: dict[str, Any] | None) -> float | None:
    """The mAP50-95 an artifact lost against the torch model it was exported from: the user's model, or the
    pruned one (pruning's own loss is the prune report's, chosen by the user's prune settings)."""
    if not bench or bench.get("map50_95") is None or not ctx.reference:
        return None
    pruned = ctx.prune_report and ctx.prune_report.get("at_exported_size", ctx.prune_report["after_recovery"])
    exported = pruned["map50_95"] if pruned else ctx.reference.get("map50_95")
    return None if exported is None else exported - bench["map50_95"]


def _device_disagrees(ctx: RunContext, bench: dict[str, Any] | None, precision: str, device: Device) -> str | None:
    """Why the device's detections do not match this machine's within the precision's box agreement, or None."""
    agreement = (bench or {}).get("device_box_agreement")
    least = ctx.config.parity.min_box_agreement[precision]
    if agreement is None or agreement >= least:
        return None
    return f"detections on {device.name} agree with this machine's on {agreement:.3f} < {least} (parity.min_box_agreement)"


def _bundle_rows(ctx: RunContext, bundle: Bundle) -> list[dict[str, Any]]:
    """A bundle's rows, one per device and thread count; it ships only if every row passed the gate, and a
    bundle that failed anywhere is withdrawn (the same files would run on every device)."""
    rows = [_bundle_row(ctx, bundle, device, threads) for device in ctx.devices for threads in ctx.thread_counts(device)]
    changed = verify_bundle(bundle.path)
    for row in rows:
        if changed:  # never ship what differs from the manifest that recorded its verdict
            row.update(status="failed", reason=f"files differ from the manifest: {', '.join(changed)}")
    dest = ctx.config.output_dir / "artifacts" / f"{bundle.target.name}-{bundle.precision}"
    failed = next((r for r in rows if r["status"] not in ("passed", "skipped")), None)
    if failed is None and any(r["status"] == "passed" for r in rows):
        dest.parent.mkdir(exist_ok=True)
        copy_tree_atomic(bundle.path, dest)
        for row in rows:
            row["artifact"] = str(dest)
    else:
        if failed is not None:
            verdict = "could not be verified" if failed["status"] == "unverified" else "failed the gate"
            where = f" on {failed['device']}" if len(rows) > 1 else ""
            err = ParityError(f"{failed['target']} {failed['precision']} {verdict}{where}: {failed['reason']}",
                              hint="not shipped; see the manifest in " + str(bundle.path))
            ctx.console.print(f"[bold red]error:[/] {escape(str(err))}")
        shutil.rmtree(dest, ignore_errors=True)  # a bundle shipped by an earlier run is no longer valid
    return rows


def _bundle_row(ctx: RunContext, bundle: Bundle, device: Device, threads: int) -> dict[str, Any]:
    """A bundle's result row on one device: parity, latency there, mAP (the device's own when measured there)
    and the gate's verdict."""
    manifest, par = bundle.manifest, bundle.manifest.parity
    row = {"target": bundle.target.name, "precision": bundle.precision, "device": device.name,
           "emulated": device.emulated, "status": par["verdict"], "reason": "; ".join(par["problems"]),
           "size_bytes": sum((bundle.path / f).stat().st_size for f in manifest.model_files),
           **{f"parity_{k}": par[k] for k in PARITY_COLUMNS}, "cache_key": bundle.path.name,
           "head": manifest.head.get("variant"), **search_summary(manifest)}
    accuracy = {k: v for k, v in ctx.accuracy.get(bundle.path.name, {}).items() if k != "per_class"}
    timing = ctx.bench.get((bundle.path.name, device.name, threads))
    bench = {**accuracy, **(timing or {})} if accuracy or timing else None
    if bench and bench.get("device_map50_95") is not None:  # measured on the device: the figure that counts there
        bench.update(host_map50_95=bench.get("map50_95"), map50_95=bench["device_map50_95"],
                     map50=bench["device_map50"])
    if bench is not None:
        row.update(bench)
        row.update(ctx.beside.get((bundle.path.name, device.name, threads)) or {})  # against the unpruned twin
        if "profile" in bench:  # the top operators and totals (the whole list stays in the benchmark's bench.json)
            label = f"{bundle.target.name} {bundle.precision}"
            row["profile"] = Profile.from_figures(label, bench).summary(PROFILE_TOP)
        if ctx.reference and ctx.reference.get("map50_95") is not None and bench.get("map50_95") is not None:
            row["map50_95_drop"] = ctx.reference["map50_95"] - bench["map50_95"]
    over_budget = map_drop_problem(_export_drop(ctx, bench), bundle.precision, ctx.config.parity.max_map_drop)
    over_budget = over_budget or search_problem(manifest) or _device_disagrees(ctx, bench, bundle.precision, device)
    if over_budget and row["status"] == "passed":
        row.update(status="failed", reason=over_budget)
    row["session_options"] = bundle.target.session_options(threads, manifest.to_dict())
    missing = ctx.missing_runtime(bundle.target.name, device)
    if missing and row["status"] == "passed":  # judged here (parity, mAP) but not timed there
        row.update(status="skipped", reason=missing)
    return row


__all__ = ["RunResult", "run_pipeline", "EdgeoptError"]
