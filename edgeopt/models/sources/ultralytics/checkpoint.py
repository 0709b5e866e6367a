"""Reading Ultralytics checkpoints: what a file is (read without unpickling), and loading it once opted in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeopt.errors import DependencyError, ModelError
from edgeopt.models.sources.ultralytics.wrapper import has_one2one

# Ultralytics model classes of tasks edgeopt does not handle, by class name in ultralytics.nn.tasks
OTHER_TASKS = {"SegmentationModel": "segmentation", "PoseModel": "pose", "OBBModel": "oriented-box (OBB)",
               "ClassificationModel": "classification", "WorldModel": "open-vocabulary (YOLO-World)",
               "YOLOEModel": "open-vocabulary (YOLOE)", "RTDETRDetectionModel": "RT-DETR"}
TASKS_MODULE = "ultralytics.nn.tasks."
INSTALL_HINT = ("Ultralytics needs torchvision, which here means torch 2.14.1: `bash scripts/setup_ultralytics.sh` "
                "creates .venv-ultralytics with edgeopt, ultralytics and every runtime (see README)")


def checkpoint_globals(path: Path) -> list[str]:
    """The classes and functions a torch checkpoint's pickle references, read without unpickling it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # zip/pickle errors come in many types; all mean the same to the user
        detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {detail}",
                         hint="copy or export the file again") from None


def is_ultralytics(globals_: list[str]) -> bool:
    """True when a checkpoint's pickle references Ultralytics classes."""
    return any(g.startswith("ultralytics.") for g in globals_)


def check_detection(globals_: list[str], path: Path) -> None:
    """Refuse segmentation, pose, OBB, classification, ... checkpoints by the model class they pickle."""
    models = {g[len(TASKS_MODULE):] for g in globals_ if g.startswith(TASKS_MODULE)}
    for cls, task in OTHER_TASKS.items():
        if cls in models:
            raise ModelError(f"{path} is an Ultralytics {task} checkpoint ({cls}); edgeopt compresses object "
                             "detectors", hint="give a detection checkpoint (yolov8n.pt, yolo11n.pt, yolo26n.pt, ...)")
    if "DetectionModel" not in models:
        raise ModelError(f"{path} references Ultralytics but holds no DetectionModel (found: {sorted(models)})")


def _import_ultralytics() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach for the network (hub, fonts, version checks)
    try:
        import ultralytics  # noqa: F401  (the pickle references its classes)
    except ImportError as exc:
        raise DependencyError(f"loading an Ultralytics checkpoint needs the 'ultralytics' package ({exc})",
                              hint=INSTALL_HINT) from None


def load_ultralytics(path: Path, trust_pickle: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The ``DetectionModel`` of an Ultralytics checkpoint (float32, eval) and what the checkpoint says about it:
    ``class_names``, ``input_size`` (training image size), ``end2end`` (has a one-to-one head), ``saved_head``
    (the head the checkpoint runs by its own flag, what Ultralytics' ``export()`` would write), ``yaml``."""
    globals_ = checkpoint_globals(path)
    check_detection(globals_, path)
    if not trust_pickle:
        raise ModelError(f"{path} is an Ultralytics checkpoint, a full Python pickle: loading it can run any code "
                         "it contains, so edgeopt needs your explicit opt-in",
                         hint="if you trust where the file came from, set model.trust_pickle: true")
    _import_ultralytics()
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)  # opted in above
    except Exception as exc:
        raise ModelError(f"cannot unpickle {path}: {exc.__class__.__name__}: {exc}",
                         hint="the checkpoint may come from a newer Ultralytics than the one installed") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path} has no model under 'ema' or 'model'")
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(True)  # Ultralytics saves frozen weights; distillation trains them (DFL becomes a buffer)
    names = getattr(model, "names", None) or {}
    class_names = [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    args = ckpt.get("train_args") or {}
    imgsz = args.get("imgsz", 640)
    info = {"class_names": class_names, "input_size": int(imgsz if isinstance(imgsz, int) else max(imgsz)),
            "end2end": has_one2one(model.model[-1]), "yaml": getattr(model, "yaml", {}).get("yaml_file", ""),
            "saved_head": "end2end" if getattr(model.model[-1], "end2end", False) else "nms"}
    return model, info


