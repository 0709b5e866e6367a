"""prune: structured channel pruning of the float model (torch-pruning), then accuracy recovery.

Channel counts round to the quantization plan's multiple; what is pruned and how is in
:mod:`edgeopt.models.pruning`, recovery in :mod:`edgeopt.training.recover`. The pruned model is saved as
channel spec + state_dict, so it reloads for any architecture with ``weights_only=True``, and at any input size:
with ``prune.input_size`` the model is pruned and recovered at that size once, and the weights are loaded into the
model at each exported size (a convolutional detector's weights do not depend on the input size).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle.bench import time_calls
from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Stage
from edgeopt.errors import ConfigError, missing_extra
from edgeopt.models.checkpoint import load_pruned, save_pruned
from edgeopt.models.depth import choose_blocks, hints_dropping, rank_blocks
from edgeopt.models.detector import Detector, torch_infer
from edgeopt.models.pruning import count, prune_to_target
from edgeopt.stages.accuracy import float_map
from edgeopt.stages.prune_allocation import measure_allocation
from edgeopt.stages.prune_latency import (CandidateLatency, latency_artifact, multiple_by_measurement,
                                          ratio_for_speedup)
from edgeopt.training.recover import recover, recovery_mode
from edgeopt.training.train import evaluate_model


def torch_latency_ms(module: Any, size: int, threads: int, warmup: int, runs: int) -> np.ndarray:
    """Milliseconds per call of a torch module on one grey image, at ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        infer = torch_infer(module)
        x = np.full((1, 3, size, size), 114 / 255.0, np.float32)
        return time_calls(lambda: infer(x), warmup, runs)
    finally:
        torch.set_num_threads(previous)


def _figures(model: Any, size: int, evaluate: Callable[[Any], dict]) -> dict[str, Any]:
    """Before/after figures of a model: MACs, parameters, torch latency at 1 thread, mAP."""
    macs, params = count(model, size)
    m = evaluate(model)
    return {"macs": macs, "params": params,
            "latency_ms_torch_1thread": float(np.median(torch_latency_ms(model, size, 1, 5, 30))),
            "map50_95": m["map50_95"], "map50": m["map50"]}


def prune_detector(detector: Detector, cfg: Any, channel_multiple: int, calib: Any, train_set: Any, val_set: Any,
                   out_dir: Path, log: Callable[[str], None] = print,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prune + recover ``detector.module``; write ``pruned_model.pt`` and ``prune.json`` (before/after figures,
    and ``extra``)."""
    size = detector.input_size
    round_to = cfg.round_to or channel_multiple

    def evaluate(model: Any) -> dict:
        if val_set is None:
            return {"map50_95": float("nan"), "map50": float("nan")}
        return evaluate_model(model, val_set, size, detector.decoder)

    teacher = detector.module.eval()
    before = _figures(teacher, size, evaluate)
    student, ratio = prune_to_target(teacher, cfg, round_to, size, calib.images if calib is not None else None,
                                     detector.pruning)
    after_prune = _figures(student, size, evaluate)
    log(f"pruned at ratio {ratio:.3f}: MACs {before['macs'] / 1e6:.0f}M -> {after_prune['macs'] / 1e6:.0f}M, "
        f"mAP50-95 {before['map50_95']:.4f} -> {after_prune['map50_95']:.4f}")
    student, recovery = recover(student, teacher, cfg, size, train_set, evaluate, log, detector.training,
                                detector.pruning.features)
    after = _figures(student, size, evaluate)
    save_pruned(student, out_dir / "pruned_model.pt")  # what the pipeline reloads, for any architecture
    if detector.training is not None and detector.training.save is not None:
        detector.training.save(student, out_dir / "pruned.pt")  # a file `edgeopt eval` opens on its own
    report = {"ratio": ratio, "round_to": round_to, "importance": cfg.importance, "allocation": cfg.allocation,
              "macs_reduction": 1 - after["macs"] / before["macs"], "before": before, "after_prune": after_prune,
              "after_recovery": after, "recovery": recovery, **(extra or {})}
    (out_dir / "prune.json").write_text(json.dumps(report, indent=2))
    return report


def depth_pruned(source: Detector, cfg: Any, calib: Any, log: Callable[[str], None]) -> tuple[Detector, dict]:
    """``source`` whose pruned copies lack its ``cfg.drop_blocks`` residual blocks whose removal alone distorts
    its outputs least on the calibration images (the kept layers' blocks excepted), and the ranking."""
    # a block holding a convolution prune.overrides names is not dropped either: the user said how far to cut it
    kept = [*(cfg.ignored if cfg.ignored is not None else source.pruning.keep), *cfg.overrides]
    ranked = rank_blocks(source.module, source.pruning, kept, calib.images[:DEPTH_IMAGES])
    dropped = choose_blocks(ranked, cfg.drop_blocks)
    if len(dropped) < cfg.drop_blocks:
        raise ConfigError(f"prune.drop_blocks {cfg.drop_blocks}: {source.source} has {len(dropped)} residual "
                          "block(s) that can be dropped (outside the kept layers, none inside another)",
                          hint=f"set prune.drop_blocks to at most {len(dropped)}")
    log(f"dropping {len(dropped)} of {len(ranked)} residual blocks, least distorting first: "
        + ", ".join(f"{b['block']} ({b['distortion']:.4f})" for b in ranked if b["block"] in dropped))
    return (replace(source, pruning=hints_dropping(source.pruning, dropped)),
            {"dropped": dropped, "ranked": ranked})


DEPTH_IMAGES = 32  # calibration images the blocks are ranked on
AUTO_RATIO = 0.3  # where round_to: auto compares multiples when the ratio is not given (a latency or MAC target)


def _measures_latency(cfg: Any) -> bool:
    """True when pruning is driven by measured latency: a speed-up target, or channel multiples chosen by it."""
    return _latency_target(cfg) or cfg.round_to == "auto"


def _latency_target(cfg: Any) -> bool:
    """True when the ratio is chosen by a measured latency target (a speed-up or milliseconds)."""
    return cfg.target_speedup is not None or cfg.target_latency_ms is not None


class PruneStage(Stage):
    """Prune the float detector and recover its accuracy; later stages export the pruned model."""

    name = "prune"

    def check(self, ctx: Any) -> None:
        if importlib.util.find_spec("torch_pruning") is None:
            raise missing_extra("torch_pruning", "prune")
        if ctx.detector.kind != "torch":
            raise ConfigError(f"the 'prune' stage needs a torch model; {ctx.detector.source} is an "
                              f"{ctx.detector.kind} model",
                              hint="drop 'prune' from stages, or give the torch model (.pt or 'module:factory')")
        recovery_mode(ctx.config.prune, ctx.recovery_set, self._source(ctx).training)  # refused before any work
        if ctx.config.prune.drop_blocks and "calibrate" not in ctx.config.stages:
            raise ConfigError("prune.drop_blocks ranks the blocks on the calibration images: it needs the "
                              "calibrate stage", hint="add 'calibrate' to stages, or set prune.drop_blocks: 0")
        if _measures_latency(ctx.config.prune):
            self._check_latency_artifact(ctx)

    @staticmethod
    def _check_latency_artifact(ctx: Any) -> None:
        """The artifact the latency target (or round_to: auto) is measured on can be made and run in this run."""
        artifact = latency_artifact(ctx)
        needed = {"calibrate", "quantize"} if artifact.precision == "int8" else {"calibrate"}
        if not needed <= set(ctx.config.stages):
            raise ConfigError(f"prune measures {artifact.target.name} {artifact.precision} (prune.latency), which "
                              f"needs the {' and '.join(sorted(needed))} stage(s)")
        reason = artifact.target.precision_unsupported(artifact.precision)
        if reason:
            raise ConfigError(f"prune cannot measure {artifact.target.name} {artifact.precision} (prune.latency): "
                              f"{reason}", hint="set prune.latency to another target or precision")

    def key(self, ctx: Any, item: Any) -> str:
        cfg = ctx.config.prune
        # only Taylor importance and depth pruning read the calibration images (letterboxed at model.input_size);
        # without them the key is free of the exported size, so points differing only in model.input_size share
        # the pruned model
        calib_key = ctx.calib_key if cfg.importance == "taylor" or cfg.drop_blocks else None
        return stable_hash("prune", cfg.model_dump(), self._source(ctx).key, self._multiple(ctx),
                           ctx.data_key, ctx.recovery_set.fingerprint() if ctx.recovery_set else None,
                           calib_key, ctx.versions["torch"], self.code(__name__),
                           self._latency_key(ctx) if _measures_latency(cfg) else None)

    @staticmethod
    def _latency_key(ctx: Any) -> Any:
        """What the measured ratio depends on besides the config: the device, the runtimes, the exported model."""
        artifact = latency_artifact(ctx)
        return (ctx.device_infos.get(artifact.device.name), ctx.versions, ctx.detector.key, ctx.calib_key,
                ctx.plan.to_dict() if ctx.plan else None)

    @staticmethod
    def _source(ctx: Any) -> Any:
        """The model pruning starts from: the user's, at prune.input_size when that is set."""
        return ctx.prune_source or ctx.detector

    @staticmethod
    def _multiple(ctx: Any) -> int:
        return ctx.plan.channel_multiple if ctx.plan else 8

    def run(self, ctx: Any, item: Any, out: Path) -> None:
        cfg, source, extra = ctx.config.prune, self._source(ctx), {}
        if cfg.drop_blocks:  # depth first: the channel search and its measurements start from the shallower model
            source, extra["depth"] = depth_pruned(source, cfg, ctx.calib, ctx.console.print)
        round_to = cfg.round_to if isinstance(cfg.round_to, int) else self._multiple(ctx)
        if _measures_latency(cfg):
            measure = CandidateLatency(ctx, source, self.code(__name__), ctx.console.print)
            if cfg.round_to == "auto":  # the multiple the runtime likes, measured at the configured ratio
                fixed = not _latency_target(cfg) and cfg.target_macs_reduction is None and cfg.ratio
                extra["round_to_measured"] = multiple_by_measurement(measure, cfg.ratio if fixed else AUTO_RATIO)
                round_to = extra["round_to_measured"]["round_to"]
            if cfg.allocation == "latency":  # per-block ratios by time saved per unit of distortion, measured
                measure.allocation = measure_allocation(measure, round_to, ctx.console.print)
                extra["allocation_measured"] = measure.allocation.describe()
            if _latency_target(cfg):  # the ratio the latency target needs, measured; then prune at it
                extra["latency"] = ratio_for_speedup(measure, round_to)
                ratio = extra["latency"]["ratio"]
                if measure.allocation is not None:  # what each block was pruned at, for the report
                    for block, block_ratio in zip(extra["allocation_measured"]["blocks"],
                                                  measure.allocation.block_ratios(ratio), strict=True):
                        block["ratio"] = block_ratio
                cfg = cfg.model_copy(update={"ratio": ratio, "target_speedup": None, "target_latency_ms": None,
                                             "overrides": measure.overrides(ratio)})
        prune_detector(source, cfg.model_copy(update={"round_to": round_to}), round_to, ctx.calib, ctx.recovery_set,
                       ctx.validation, out, log=ctx.console.print, extra=extra)

    def load(self, ctx: Any, item: Any, out: Path) -> None:
        report = json.loads((out / "prune.json").read_text())
        detector = ctx.detector
        module = load_pruned(out / "pruned_model.pt", detector.module, detector.pruning.normalize)
        ctx.detector = detector.with_module(module, f"pruned {out.name}")
        if self._source(ctx).input_size != detector.input_size and ctx.validation is not None:
            # the prune report's mAP is at prune.input_size; each artifact is judged against the torch model it
            # was exported from, at the size it was exported at
            m = float_map(ctx, ctx.detector)
            report["at_exported_size"] = {"input_size": detector.input_size, "map50_95": m["map50_95"],
                                          "map50": m["map50"]}
        ctx.prune_report = report
