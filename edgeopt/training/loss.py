"""Training loss of the reference detector: task-aligned assignment (TOOD style), BCE + CIoU.

The assigner picks, for each ground-truth box, the ``topk`` anchors inside it that best combine classification
score and localisation quality (``score^alpha * iou^beta``); class targets are that alignment, normalised, so
scores learn to rank boxes by quality, which is what COCO mAP50-95 rewards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgeopt.models.sources.reference.network import anchor_points, decode_raw


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU between matching x1y1x2y2 boxes (broadcasting over leading dims)."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a.unbind(-1), b.unbind(-1)
    aw, ah = ax2 - ax1, (ay2 - ay1).clamp(min=eps)
    bw, bh = bx2 - bx1, (by2 - by1).clamp(min=eps)
    inter = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(0) * (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    cw = torch.max(ax2, bx2) - torch.min(ax1, bx1)
    ch = torch.max(ay2, by2) - torch.min(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(bw / bh) - torch.atan(aw / ah)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class TaskAlignedAssigner:
    """Assign anchors to ground truth by the task-aligned metric (TOOD)."""

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(
        self,
        scores: torch.Tensor,  # (B, N, C) sigmoid
        boxes: torch.Tensor,  # (B, N, 4) predicted xyxy
        points: torch.Tensor,  # (N, 2)
        gt_cls: torch.Tensor,  # (B, M) long
        gt_box: torch.Tensor,  # (B, M, 4)
        gt_mask: torch.Tensor,  # (B, M) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target boxes ``(B, N, 4)``, target scores ``(B, N, C)`` and the foreground mask ``(B, N)``."""
        b, n, c = scores.shape
        m = gt_box.shape[1]
        if m == 0:
            return torch.zeros_like(boxes), torch.zeros_like(scores), torch.zeros(b, n, dtype=torch.bool)
        lt = points[None, None] - gt_box[:, :, None, :2]
        rb = gt_box[:, :, None, 2:] - points[None, None]
        in_gt = torch.cat((lt, rb), -1).amin(-1) > self.eps  # (B, M, N)
        in_gt &= gt_mask[:, :, None]
        ious = bbox_ciou(gt_box[:, :, None, :], boxes[:, None, :, :]).clamp(0) * in_gt  # (B, M, N)
        cls_idx = gt_cls.clamp(0)[:, :, None].expand(b, m, n)
        cls_scores = scores.permute(0, 2, 1).gather(1, cls_idx) * in_gt  # (B, M, N)
        align = cls_scores.pow(self.alpha) * ious.pow(self.beta)
        topk = align.topk(min(self.topk, n), dim=-1).indices
        is_top = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, topk, True)
        pos = is_top & in_gt & (align > 0)  # (B, M, N)
        # an anchor claimed by several boxes goes to the one it overlaps most
        multi = pos.sum(1, keepdim=True) > 1
        best = ious.argmax(1, keepdim=True)
        best_mask = torch.zeros_like(pos).scatter_(1, best, True)
        pos = torch.where(multi, best_mask & pos.any(1, keepdim=True), pos)
        fg = pos.any(1)  # (B, N)
        gt_of = pos.float().argmax(1)  # (B, N)
        t_box = gt_box.gather(1, gt_of[..., None].expand(b, n, 4))
        t_cls = gt_cls.gather(1, gt_of).clamp(0)
        align = align * pos
        norm = (align * ious.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + self.eps)).amax(1)  # (B, N)
        t_scores = F.one_hot(t_cls, c).float() * (norm * fg)[..., None]
        return t_box, t_scores, fg


class DetectionLoss:
    """BCE on class scores against aligned targets plus CIoU on foreground boxes (common YOLO-family gains, no distribution loss)."""

    def __init__(self, num_classes: int, box_gain: float = 7.5, cls_gain: float = 0.5) -> None:
        self.num_classes = num_classes
        self.box_gain, self.cls_gain = box_gain, cls_gain
        self.assigner = TaskAlignedAssigner()

    def __call__(
        self, raw: list[tuple[torch.Tensor, torch.Tensor]], targets: list[torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``targets[i]`` is a ``(K, 5)`` tensor of (class, x1, y1, x2, y2) in input pixels for image i."""
        boxes, logits = decode_raw([(b.float(), c.float()) for b, c in raw], *size)
        boxes, logits = boxes.permute(0, 2, 1), logits.permute(0, 2, 1)  # (B, N, 4), (B, N, C)
        points, _ = anchor_points(raw)
        bsz = boxes.shape[0]
        m = max((len(t) for t in targets), default=0)
        gt = torch.zeros(bsz, m, 5)
        gt_mask = torch.zeros(bsz, m, dtype=torch.bool)
        for i, t in enumerate(targets):
            gt[i, : len(t)] = t
            gt_mask[i, : len(t)] = True
        t_box, t_scores, fg = self.assigner(
            logits.detach().sigmoid(), boxes.detach(), points, gt[..., 0].long(), gt[..., 1:], gt_mask
        )
        norm = t_scores.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(logits, t_scores, reduction="sum") / norm
        if fg.any():
            weight = t_scores.sum(-1)[fg]
            loss_box = ((1.0 - bbox_ciou(boxes[fg], t_box[fg])) * weight).sum() / norm
        else:
            loss_box = boxes.sum() * 0.0
        loss = (self.box_gain * loss_box + self.cls_gain * loss_cls) * bsz
        return loss, {"box": float(loss_box.detach()), "cls": float(loss_cls.detach())}
