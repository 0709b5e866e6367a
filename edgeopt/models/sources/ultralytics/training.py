"""Label fine-tuning of a wrapped Ultralytics detector with Ultralytics' own loss.

The criterion is the one Ultralytics' trainer builds for the model (``DetectionModel.init_criterion``):
``v8DetectionLoss`` (box IoU + class BCE + distribution focal loss) for YOLOv8/YOLO11, ``E2ELoss`` (one-to-many
plus one-to-one) for heads with a one-to-one branch (YOLO26, YOLOv10), at its initial branch weights. Its gains
(``box``, ``cls``, ``dfl``) are the checkpoint's training arguments where it has them, Ultralytics' defaults
otherwise.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from edgeopt.models.detector import TrainingHooks

_criteria: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def _hyperparameters(args: Any) -> Any:
    """The checkpoint's training arguments as the attribute namespace the criterion reads, over the defaults."""
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace

    given = args if isinstance(args, dict) else vars(args) if args is not None else {}
    return IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **{k: v for k, v in given.items() if k in DEFAULT_CFG_DICT}})


def _criterion(model: nn.Module) -> Any:
    """Ultralytics' criterion for the wrapped ``model`` (built once per model: the pruned student)."""
    if model not in _criteria:
        detection = model.model
        detection.args = _hyperparameters(getattr(detection, "args", None))
        _criteria[model] = detection.init_criterion()
    return _criteria[model]


def ultralytics_batch(targets: list[torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """edgeopt's per-image targets, ``(K, 5)`` (class, x1, y1, x2, y2) in input pixels, as Ultralytics' batch
    labels: image index, class, and centre-size boxes divided by the input size."""
    index, classes, boxes = [], [], []
    for i, t in enumerate(targets):
        xyxy = t[:, 1:5].float() / size
        index.append(torch.full((len(t),), float(i)))
        classes.append(t[:, 0].float())
        boxes.append(torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1))
    return {"batch_idx": torch.cat(index), "cls": torch.cat(classes)[:, None], "bboxes": torch.cat(boxes)}


def ultralytics_loss(model: nn.Module, raw: Any, targets: list[torch.Tensor], size: int) -> torch.Tensor:
    """Ultralytics' detection loss of the raw predictions ``raw`` against ``targets`` (summed over its terms,
    times the batch size, as its trainer back-propagates it)."""
    loss, _ = _criterion(model)(raw, ultralytics_batch(targets, size))
    return loss.sum()


TRAINING = TrainingHooks(raw_forward=lambda model, x: model.raw(x), deploy=lambda model, raw, size: model.dense(raw),
                         loss=ultralytics_loss)
