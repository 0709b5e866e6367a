"""Which head of a two-head detector to export: chosen by measurement, not by rule.

Some detector families carry a one-to-one head (ranked rows, no NMS) and a one-to-many head (NMS) on one
backbone. Depending on how a checkpoint was trained either may score better (a third-party nano checkpoint lost
8.5 mAP points on its end-to-end head), so both are scored in torch on the validation set (cheap: they share the
backbone and the set is small) and the end-to-end head, which spares the device its NMS, is exported when it is
within the fp32 mAP budget of the better one. ``model.head`` forces either.
"""

from __future__ import annotations

from typing import Any

from edgeopt.models.detector import Detector
from edgeopt.stages.accuracy import float_map


def head_scores(ctx: Any, detector: Detector) -> dict[str, dict[str, Any]] | None:
    """mAP50-95, mAP50 and per-class figures of each head of ``detector`` on the validation set (each cached);
    None when it has one head or there is no labelled validation set."""
    heads = detector.heads()
    if not heads or ctx.validation is None or not ctx.validation.labelled:
        return None
    return {name: float_map(ctx, head) for name, head in heads.items()}


def choose_head(ctx: Any, detector: Detector) -> dict[str, Any] | None:
    """The head to export and why, with the figures it was chosen on: ``{"head", "reason", "map50_95"}``; None
    for a detector with one head."""
    if "end2end" not in detector.variants:  # one head (asked without building the other head's copy)
        return None
    forced = ctx.config.model.head
    if forced != "auto":
        return {"head": forced, "reason": f"model.head: {forced}"}
    scores = head_scores(ctx, detector)
    if scores is None:
        saved = detector.head.get("saved_head", "end2end")
        return {"head": saved, "reason": "no labelled validation set to score the heads on: the head the "
                                         "checkpoint was saved with"}
    map50_95 = {name: s["map50_95"] for name, s in scores.items()}
    return {**pick_head(map50_95, ctx.config.parity.max_map_drop["fp32"]), "map50_95": map50_95}


def pick_head(map50_95: dict[str, float], budget_points: float) -> dict[str, str]:
    """End-to-end when its mAP50-95 is within ``budget_points`` of the better head's (no NMS on the device),
    else the one-to-many head."""
    end2end, nms = map50_95["end2end"], map50_95["nms"]
    gap = (max(end2end, nms) - end2end) * 100
    if gap <= budget_points:  # written so that a NaN score picks the one-to-many head
        return {"head": "end2end", "reason": f"end-to-end mAP50-95 {end2end:.4f} vs one-to-many + NMS {nms:.4f}: "
                                             f"within the fp32 budget ({gap:.2f} <= {budget_points:g} pt), no NMS"}
    return {"head": "nms", "reason": f"end-to-end mAP50-95 {end2end:.4f} is {gap:.2f} pt below one-to-many + NMS "
                                     f"{nms:.4f}, over the fp32 budget {budget_points:g} pt"}


def best_head(scores: dict[str, dict[str, Any]]) -> str:
    """The head that scores the higher mAP50-95 (the reference every row's drop is measured against)."""
    return max(scores, key=lambda name: scores[name]["map50_95"])
