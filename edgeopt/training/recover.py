"""Recovery of a pruned detector: fine-tune with the family's own loss when labels exist, or distil from the
unpruned model's outputs without labels; an EMA of the weights is evaluated and the best epoch wins."""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.errors import ConfigError
from edgeopt.models.detector import TrainingHooks
from edgeopt.models.pruning import head_outputs
from edgeopt.training.augment import augment_batch
from edgeopt.training.imitate import FeatureImitation
from edgeopt.training.loss import DetectionLoss
from edgeopt.training.precision import native_bf16
from edgeopt.training.train import ModelEMA, preload


def distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """Label-free loss on the deployable output (B, 4 + C, N): L1 on boxes, BCE on scores, weighted by the
    teacher's confidence so background anchors do not dominate the box term."""
    conf = teacher_out[:, 4:].amax(1, keepdim=True)
    box = (F.l1_loss(student_out[:, :4], teacher_out[:, :4], reduction="none") * conf).sum() / conf.sum().clamp(min=1)
    scores = F.binary_cross_entropy(student_out[:, 4:].clamp(1e-6, 1 - 1e-6), teacher_out[:, 4:])
    return 20.0 * box + scores * 10.0


def recovery_mode(cfg: Any, train_set: Any, training: TrainingHooks | None) -> str:
    """The mode that will run (``none`` when there is nothing to train on); refuses impossible requests."""
    rc = cfg.recovery
    mode = rc.mode
    if mode == "auto":
        mode = "finetune" if train_set is not None and train_set.labelled else "distill"
    if mode == "none" or rc.epochs == 0 or train_set is None:
        return "none"
    if mode == "finetune" and not train_set.labelled:
        raise ConfigError("prune.recovery.mode finetune needs labelled prune.recovery.data", hint="use distill")
    if mode == "finetune" and training is None:
        raise ConfigError("prune.recovery.mode finetune needs a detector with a training loss", hint="use distill")
    return mode


def _to_float(raw: Any) -> Any:
    """``raw`` (tensors in dicts, lists, tuples) with every tensor in float32."""
    if isinstance(raw, torch.Tensor):
        return raw.float()
    if isinstance(raw, dict):
        return {k: _to_float(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return type(raw)(_to_float(v) for v in raw)
    return raw


def _step_loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor, targets: list, size: int, mode: str,
               training: TrainingHooks | None, loss_fn: DetectionLoss,
               extra_loss: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """One batch's loss: the teacher's outputs guide both modes (``extra_loss``, read after both forward passes:
    the weighted feature imitation); labels add the detector's own loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
        with torch.no_grad():
            teacher_outs = [y.float() for y in head_outputs(teacher, x)]
        if training is not None:  # one forward pass serves both losses
            raw = training.raw_forward(student, x)
            outs = training.deploy(student, raw, size)
        else:
            outs = head_outputs(student, x)
        loss = sum(distill_loss(o.float(), t) for o, t in zip(outs, teacher_outs, strict=True))
        if extra_loss is not None:
            loss = loss + extra_loss()
        if mode == "finetune" and training.loss is None:
            loss = loss + loss_fn(raw, targets, (size, size))[0]
    if mode == "finetune" and training.loss is not None:  # a family's own loss, in float32 as its trainer runs it
        loss = loss + training.loss(student, _to_float(raw), targets, size)
    return loss


def _lr(base: float, it: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 2% of ``base``."""
    return base * (it / warmup if it < warmup else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * it / total)))


def recover(student: nn.Module, teacher: nn.Module, cfg: Any, size: int, train_set: Any,
            evaluate: Callable[[nn.Module], dict], log: Callable[[str], None],
            training: TrainingHooks | None = None,
            features: tuple[str, ...] = ()) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune (labels) or distil (no labels) the pruned model; keep the best epoch by validation mAP.

    ``cfg``: the prune config; ``training``: the family's hooks, if it can be trained with labels;
    ``features``: the modules whose inputs the pruned model's features imitate (``recovery.feature_weight``)."""
    mode = recovery_mode(cfg, train_set, training)
    if mode == "none":
        return student, {"mode": "none", "epochs": 0}
    rc = cfg.recovery
    imitating = rc.feature_weight > 0 and bool(features)
    if rc.feature_weight > 0 and not imitating:
        log("recovery: this model family names no head features to imitate; matching the outputs only")
    images, targets = preload(train_set, size)
    rng = np.random.default_rng(0)
    loss_fn = DetectionLoss(len(train_set.class_names) or 1)
    steps = max(1, len(images) // rc.batch)
    total = steps * rc.epochs
    warmup = min(100, total // 10)
    ema = ModelEMA(student, tau=max(50.0, steps / 2))  # the EMA is what gets evaluated and kept, as in training
    best_map, best_state = evaluate(student)["map50_95"], copy.deepcopy(student.state_dict())
    history: list[dict[str, Any]] = [{"epoch": 0, "map50_95": best_map}]
    teacher.eval()
    start = time.time()
    it = 0
    # hooked only after the EMA copy above is made: that copy must not record features when it is evaluated
    with FeatureImitation(student, teacher, features, size) if imitating else nullcontext() as imitation:
        extra_loss = (lambda: rc.feature_weight * imitation.loss()) if imitating else None
        params = list(student.parameters()) + (imitation.parameters() if imitating else [])
        optimizer = torch.optim.AdamW(params, lr=rc.lr, weight_decay=5e-4)
        for epoch in range(rc.epochs):
            student.train()
            order = rng.permutation(len(images))
            losses = []
            for step in range(steps):
                for g in optimizer.param_groups:
                    g["lr"] = _lr(rc.lr, it, warmup, total)
                idx = order[step * rc.batch : (step + 1) * rc.batch]
                x, t = augment_batch(images[idx].float() / 255, [targets[i] for i in idx], rng, images, targets, 0.0)
                loss = _step_loss(student, teacher, x, t, size, mode, training, loss_fn, extra_loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                optimizer.step()
                ema.update(student)
                losses.append(float(loss.detach()))
                it += 1
            metrics = evaluate(ema.ema)
            history.append({"epoch": epoch + 1, "map50_95": metrics["map50_95"], "loss": float(np.mean(losses)),
                            "seconds": round(time.time() - start, 1)})
            log(f"recovery ({mode}) epoch {epoch + 1}/{rc.epochs}: mAP50-95 {metrics['map50_95']:.4f}")
            if metrics["map50_95"] > best_map:
                best_map, best_state = metrics["map50_95"], copy.deepcopy(ema.ema.state_dict())
            if rc.time_budget_s and time.time() - start > rc.time_budget_s:
                break
    student.load_state_dict(best_state)
    return student.eval(), {"mode": mode, "epochs": len(history) - 1, "seconds": round(time.time() - start, 1),
                            "best_map50_95": best_map, "history": history,
                            "feature_weight": rc.feature_weight if imitating else 0.0}
