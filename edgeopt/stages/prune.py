"""prune: structured channel pruning with torch-pruning, then accuracy recovery.

torch-pruning's dependency graph decides which channels are coupled (residual adds, concats, upsampling);
edgeopt only chooses what to prune and how much: importance criterion, uniform or global allocation,
channel multiples from the quantization plan (so int8 kernels stay efficient), ignored layers (the detection
head by default; output convolutions always), per-layer overrides, or a target MACs reduction found by
bisection on the ratio. Recovery fine-tunes with the detector's own loss when labelled data is given, or
distils from the unpruned model's outputs on unlabelled images; the best epoch on the validation set wins.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.config.schema import PruneConfig
from edgeopt.errors import ConfigError, DependencyError
from edgeopt.models.normalize import normalize_for_pruning


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise DependencyError("the Python package 'torch_pruning' is not installed",
                              hint="pip install 'edgeopt[prune]'") from None
    return torch_pruning


def output_convs(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The convolutions whose outputs are the raw predictions, for any architecture: walk the autograd graph
    back from every head output to the first convolution on each path (what follows is decode; their channel
    counts are fixed by the output format)."""
    params = {id(p): name for name, p in model.named_parameters()}
    with torch.enable_grad():
        stack = [y.grad_fn for y in head_outputs(model, example) if y.grad_fn is not None]
    found: set[str] = set()
    seen: set = set()  # the nodes themselves, not id()s: a freed wrapper's id can be reused by another node
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        parents = [f for f, _ in fn.next_functions if f is not None]
        if type(fn).__name__.startswith("ConvolutionBackward"):
            weights = [params.get(id(f.variable), "") for f in parents if hasattr(f, "variable")]
            weights = [w for w in weights if w.endswith(".weight")]
            if weights:
                found.add(weights[0].rsplit(".", 1)[0])
                continue
        stack.extend(parents)
    return sorted(found)


def head_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every head branch's dense output: what pruning traces and distillation matches. Models with several
    heads (YOLO26's one-to-many and one-to-one) say so with a ``head_outputs`` method."""
    return model.head_outputs(x) if hasattr(model, "head_outputs") else [model(x)]


def kept_channels(channels: int, pruned: int, multiple: int) -> int:
    """Channels left after pruning ``pruned`` of ``channels``, rounded to the *nearest* multiple (at least one)."""
    if channels <= multiple:
        return channels
    return min(channels, max(multiple, int(round((channels - pruned) / multiple)) * multiple))


def _pruner_class():
    """torch-pruning's pruner, rounding kept channels to the nearest multiple of ``round_to``.

    torch-pruning floors them: a 16-channel layer at ratio 0.05 kept 8, so nano models (YOLOv8n has many 16- and
    32-channel layers) lost 19% of their MACs and all their accuracy at a 5% ratio (measured).
    """
    tp = _tp()

    class NearestMultiplePruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            return current_channels - kept_channels(current_channels, n_pruned, round_to)

    return NearestMultiplePruner


def count(model: nn.Module, size: int) -> tuple[int, int]:
    """(MACs, parameters) at one ``size`` x ``size`` image."""
    macs, params = _tp().utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, size, size))
    return int(macs), int(params)


def _importance(name: str):
    tp = _tp()
    return {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
            "l2": lambda: tp.importance.MagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.TaylorImportance(),
            "bn_scale": lambda: tp.importance.BNScaleImportance()}[name]()


def prune_once(model: nn.Module, cfg: PruneConfig, ratio: float, round_to: int, size: int,
               calib_images: np.ndarray | None, ignored_globs: list[str] = ()) -> nn.Module:
    """A pruned copy of ``model`` at channel ratio ``ratio``; output convolutions are always kept.

    ``ignored_globs``: the model's default kept modules, used when the config names none."""
    model = copy.deepcopy(model).eval()
    normalize_for_pruning(model)
    modules = dict(model.named_modules())
    example = torch.zeros(1, 3, size, size)
    ignored = [modules[n] for n in output_convs(model, example)]
    for pattern in cfg.ignored if cfg.ignored is not None else ignored_globs:
        ignored += [m for n, m in modules.items() if fnmatch.fnmatch(n, pattern) and isinstance(m, nn.Conv2d)]
    ratio_dict = {}
    for pattern, r in cfg.overrides.items():
        matched = [m for n, m in modules.items() if fnmatch.fnmatch(n, pattern) and isinstance(m, nn.Conv2d)]
        if not matched:
            raise ConfigError(f"prune.overrides: no convolution matches {pattern!r}")
        ratio_dict.update({m: r for m in matched})
    pruner = _pruner_class()(model, example, importance=_importance(cfg.importance),
                                  global_pruning=cfg.allocation == "global", pruning_ratio=ratio,
                                  pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored, round_to=round_to,
                                  forward_fn=head_outputs)
    if cfg.importance == "taylor":
        if calib_images is None:
            raise ConfigError("prune.importance 'taylor' needs calibration images (the calibrate stage)")
        # first-order sensitivity of the predictions to each channel, on the calibration images (no labels)
        model.zero_grad()
        for i in range(0, min(len(calib_images), 32), 8):
            x = torch.from_numpy(calib_images[i : i + 8].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            sum(y.pow(2).sum() for y in head_outputs(model, x)).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def prune_to_target(model: nn.Module, cfg: PruneConfig, round_to: int, size: int, calib_images: np.ndarray | None,
                    ignored_globs: list[str] = ()) -> tuple[nn.Module, float]:
    """Prune at ``cfg.ratio``, or bisect the ratio until MACs fall by ``cfg.target_macs_reduction``."""
    if cfg.target_macs_reduction is None:
        return prune_once(model, cfg, cfg.ratio or 0.0, round_to, size, calib_images, ignored_globs), cfg.ratio or 0.0
    base, _ = count(model, size)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(8):
        mid = (lo + hi) / 2
        candidate = prune_once(model, cfg, mid, round_to, size, calib_images, ignored_globs)
        reduction = 1 - count(candidate, size)[0] / base
        if reduction >= cfg.target_macs_reduction:
            best, hi = (candidate, mid), mid
        else:
            lo = mid
    if best is None:
        raise ConfigError(f"prune.target_macs_reduction {cfg.target_macs_reduction} is not reachable with the "
                          "ignored layers kept", hint="lower the target or shrink 'ignored'")
    return best


def distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """Label-free loss on the deployable output (B, 4 + C, N): L1 on boxes, BCE on scores, weighted by the
    teacher's confidence so background anchors do not dominate the box term."""
    conf = teacher_out[:, 4:].amax(1, keepdim=True)
    box = (F.l1_loss(student_out[:, :4], teacher_out[:, :4], reduction="none") * conf).sum() / conf.sum().clamp(min=1)
    scores = F.binary_cross_entropy(student_out[:, 4:].clamp(1e-6, 1 - 1e-6), teacher_out[:, 4:])
    return 20.0 * box + scores * 10.0


def recover(student: nn.Module, teacher: nn.Module, cfg: PruneConfig, size: int, train_set, val_set,
            evaluate: Callable[[nn.Module], dict], log: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune (labels) or distil (no labels) the pruned model; keep the best epoch by validation mAP."""
    from edgeopt.models.augment import augment_batch
    from edgeopt.models.loss import DetectionLoss
    from edgeopt.models.reference import deployable_output
    from edgeopt.models.train import ModelEMA, preload

    rc = cfg.recovery
    mode = rc.mode
    if mode == "auto":
        mode = "finetune" if train_set is not None and train_set.labelled else "distill"
    if mode == "none" or rc.epochs == 0 or train_set is None:
        return student, {"mode": "none", "epochs": 0}
    if mode == "finetune" and not train_set.labelled:
        raise ConfigError("prune.recovery.mode finetune needs labelled prune.recovery.data", hint="use distill")
    if mode == "finetune" and not hasattr(student, "forward_raw"):
        raise ConfigError("prune.recovery.mode finetune needs a detector with a training loss", hint="use distill")
    images, targets = preload(train_set, size)
    rng = np.random.default_rng(0)
    loss_fn = DetectionLoss(len(train_set.class_names) or 1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=rc.lr, weight_decay=5e-4)
    steps = max(1, len(images) // rc.batch)
    total = steps * rc.epochs
    warmup = min(100, total // 10)
    ema = ModelEMA(student, tau=max(50.0, steps / 2))  # the EMA is what gets evaluated and kept, as in training
    best_map, best_state = evaluate(student)["map50_95"], copy.deepcopy(student.state_dict())
    history = [{"epoch": 0, "map50_95": best_map}]
    teacher.eval()
    start = time.time()
    it = 0
    for epoch in range(rc.epochs):
        student.train()
        order = rng.permutation(len(images))
        for step in range(steps):
            lr = rc.lr * (it / warmup if it < warmup else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * it / total)))
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx = order[step * rc.batch : (step + 1) * rc.batch]
            x, t = augment_batch(images[idx].float() / 255, [targets[i] for i in idx], rng, images, targets, 0.0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                with torch.no_grad():
                    teacher_outs = [y.float() for y in head_outputs(teacher, x)]
                # the teacher's outputs guide both modes; labels add the detector's own loss when known
                if hasattr(student, "forward_raw"):  # one forward pass serves both losses
                    raw = student.forward_raw(x)
                    outs = [deployable_output(raw, size, size)]
                else:
                    outs = head_outputs(student, x)
                loss = sum(distill_loss(o.float(), t) for o, t in zip(outs, teacher_outs))
                if mode == "finetune":
                    loss = loss + loss_fn(raw, t, (size, size))[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
            optimizer.step()
            ema.update(student)
            it += 1
        metrics = evaluate(ema.ema)
        history.append({"epoch": epoch + 1, "map50_95": metrics["map50_95"], "seconds": round(time.time() - start, 1)})
        log(f"recovery ({mode}) epoch {epoch + 1}/{rc.epochs}: mAP50-95 {metrics['map50_95']:.4f}")
        if metrics["map50_95"] > best_map:
            best_map, best_state = metrics["map50_95"], copy.deepcopy(ema.ema.state_dict())
        if rc.time_budget_s and time.time() - start > rc.time_budget_s:
            break
    student.load_state_dict(best_state)
    return student.eval(), {"mode": mode, "epochs": len(history) - 1, "seconds": round(time.time() - start, 1),
                            "best_map50_95": best_map, "history": history}


def prune_stage(detector, cfg: PruneConfig, channel_multiple: int, calib, train_set, val_set, out_dir: Path,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prune + recover ``detector.module``; write ``pruned_model.pt`` and ``prune.json`` (before/after figures)."""
    from edgeopt.models.train import evaluate_model
    from edgeopt.models.checkpoint import save_detector, save_pruned
    from edgeopt.stages.benchmark import torch_latency_ms

    size = detector.input_size
    round_to = cfg.round_to or channel_multiple

    def evaluate(model: nn.Module) -> dict:
        if val_set is None:
            return {"map50_95": float("nan"), "map50": float("nan")}
        return evaluate_model(model, val_set, size, detector.decoder)

    def figures(model: nn.Module) -> dict[str, Any]:
        macs, params = count(model, size)
        m = evaluate(model)
        return {"macs": macs, "params": params, "latency_ms_torch_1thread": float(np.median(torch_latency_ms(model, size, 1, 5, 30))),
                "map50_95": m["map50_95"], "map50": m["map50"]}

    teacher = detector.module.eval()
    before = figures(teacher)
    student, ratio = prune_to_target(teacher, cfg, round_to, size, calib.images if calib is not None else None,
                                     detector.prune_ignored)
    after_prune = figures(student)
    log(f"pruned at ratio {ratio:.3f}: MACs {before['macs'] / 1e6:.0f}M -> {after_prune['macs'] / 1e6:.0f}M, "
        f"mAP50-95 {before['map50_95']:.4f} -> {after_prune['map50_95']:.4f}")
    student, recovery = recover(student, teacher, cfg, size, train_set, val_set, evaluate, log)
    after = figures(student)
    save_pruned(student, out_dir / "pruned_model.pt")  # what the pipeline reloads, for any architecture
    if hasattr(student, "config"):  # the reference detector: also a file `edgeopt eval` opens on its own
        save_detector(student, out_dir / "pruned.pt")
    report = {"ratio": ratio, "round_to": round_to, "importance": cfg.importance, "allocation": cfg.allocation,
              "macs_reduction": 1 - after["macs"] / before["macs"], "before": before, "after_prune": after_prune,
              "after_recovery": after, "recovery": recovery}
    (out_dir / "prune.json").write_text(json.dumps(report, indent=2))
    return report
