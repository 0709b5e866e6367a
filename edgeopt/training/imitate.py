"""Feature imitation for recovery: the pruned model's multi-scale features (what its head reads) are pulled
towards the unpruned model's, through a 1x1 adaptor where pruning left fewer channels. The deployable outputs
carry 4 + C numbers per anchor; the features carry the whole representation the head is built on, which is
what a large channel cut damages first."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every 4-D tensor in ``value`` (a tensor, or lists and tuples of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.dim() == 4 else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _standardised(x: torch.Tensor) -> torch.Tensor:
    """``x`` with each channel at zero mean and unit variance over batch and space: the loss then compares the
    pattern of a feature, not its scale (which pruning and batch norm move freely)."""
    x = x.float()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / (std + 1e-6)


class _Capture:
    """Forward pre-hooks that record the feature maps entering some modules, in call order."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"no module named {missing[0]!r}")
        self.features: list[torch.Tensor] = []
        self._handles = [modules[n].register_forward_pre_hook(self._record) for n in names]

    def _record(self, _module: nn.Module, args: tuple) -> None:
        self.features.extend(_tensors(args))

    def take(self) -> list[torch.Tensor]:
        """The features recorded since the last call."""
        features, self.features = self.features, []
        return features

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


class FeatureImitation:
    """Records the features entering ``modules`` in the student and the teacher on every forward pass and
    scores how far apart they are; ``parameters()`` are the adaptors, to be trained with the student.

    Use as a context manager: the hooks are removed on exit."""

    def __init__(self, student: nn.Module, teacher: nn.Module, modules: tuple[str, ...], size: int) -> None:
        self._student = _Capture(student, modules)
        try:
            self._teacher = _Capture(teacher, modules)
        except KeyError:
            self._student.close()
            raise
        try:
            modes = student.training, teacher.training
            with torch.no_grad():  # one dry pass gives each feature's channel count in both models
                x = torch.zeros(1, 3, size, size)
                student.eval()(x), teacher.eval()(x)
            student.train(modes[0]), teacher.train(modes[1])
            pairs = list(zip(self._student.take(), self._teacher.take(), strict=True))
        except Exception:
            self.close()
            raise
        self.adaptors = nn.ModuleList(
            nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False) if s.shape[1] != t.shape[1] else nn.Identity()
            for s, t in pairs)
        for adaptor in self.adaptors:
            if isinstance(adaptor, nn.Conv2d):  # start as a projection, not noise, so the first steps teach
                nn.init.orthogonal_(adaptor.weight)

    def parameters(self) -> list[nn.Parameter]:
        """The adaptors' weights."""
        return list(self.adaptors.parameters())

    def loss(self) -> torch.Tensor:
        """Mean squared distance between the standardised features of the last student and teacher passes."""
        student, teacher = self._student.take(), self._teacher.take()
        if len(student) != len(self.adaptors) or len(teacher) != len(self.adaptors):
            raise RuntimeError(f"expected {len(self.adaptors)} features per pass, got {len(student)} from the "
                               f"pruned model and {len(teacher)} from the unpruned one")
        terms = [F.mse_loss(_standardised(adaptor(s.float())), _standardised(t.detach()))
                 for adaptor, s, t in zip(self.adaptors, student, teacher, strict=True)]
        return torch.stack(terms).mean()

    def close(self) -> None:
        """Remove the hooks from both models."""
        self._student.close()
        self._teacher.close()

    def __enter__(self) -> FeatureImitation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
