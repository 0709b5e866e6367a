"""Detection augmentation on batches of letterboxed uint8 images, in torch (cheap next to the model's step).

Geometric: mosaic (four images in a 2x2 grid), random zoom/translate, horizontal and vertical flips (every
reference class is symmetric under flips). Photometric: brightness, contrast, saturation. Boxes follow every
geometric change; boxes cut to less than 30% of their area, or under 3 px, are dropped.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PAD = 114.0 / 255.0


def _zoom(img: torch.Tensor, boxes: torch.Tensor, scale: float, dx: float, dy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``img`` (3, S, S) by ``scale`` and place it at offset (dx, dy) of a padded S x S canvas."""
    s = img.shape[-1]
    new = max(8, int(round(s * scale)))
    resized = F.interpolate(img[None], size=(new, new), mode="bilinear", align_corners=False)[0]
    canvas = torch.full_like(img, PAD)
    ox, oy = int(round(dx)), int(round(dy))
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + new, s), min(oy + new, s)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = resized[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    k = new / s
    out = boxes.clone()
    out[:, [1, 3]] = boxes[:, [1, 3]] * k + ox
    out[:, [2, 4]] = boxes[:, [2, 4]] * k + oy
    return canvas, out


def _clip_boxes(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Clip (cls, x1, y1, x2, y2) boxes to the canvas; drop ones mostly cut away or too small."""
    if len(boxes) == 0:
        return boxes
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    clipped = boxes.clone()
    clipped[:, 1:] = clipped[:, 1:].clamp(0, size)
    w, h = clipped[:, 3] - clipped[:, 1], clipped[:, 4] - clipped[:, 2]
    keep = (w > 3) & (h > 3) & (w * h > 0.3 * area)
    return clipped[keep]


def _mosaic(imgs: list[torch.Tensor], boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Four images at half size in a 2x2 grid."""
    s = imgs[0].shape[-1]
    half = s // 2
    canvas = torch.empty_like(imgs[0])
    out = []
    for k, (img, b) in enumerate(zip(imgs, boxes, strict=True)):
        ox, oy = (k % 2) * half, (k // 2) * half
        canvas[:, oy : oy + half, ox : ox + half] = F.interpolate(img[None], size=(half, half), mode="bilinear",
                                                                   align_corners=False)[0]
        nb = b.clone()
        nb[:, [1, 3]] = b[:, [1, 3]] * 0.5 + ox
        nb[:, [2, 4]] = b[:, [2, 4]] * 0.5 + oy
        out.append(nb)
    return canvas, torch.cat(out)


def augment_batch(
    images: torch.Tensor, targets: list[torch.Tensor], rng: np.random.Generator, pool_images: torch.Tensor,
    pool_targets: list[torch.Tensor], mosaic: float = 0.3,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Augment a float batch (B, 3, S, S) in [0, 1] with targets (K, 5) = (cls, x1, y1, x2, y2) pixels."""
    size = images.shape[-1]
    out_imgs, out_tgts = [], []
    for img, tgt in zip(images, targets, strict=True):
        if rng.random() < mosaic:
            others = rng.integers(0, len(pool_images), 3)
            img, tgt = _mosaic([img] + [pool_images[i].float() / 255 for i in others],
                               [tgt] + [pool_targets[i] for i in others])
            scale = float(rng.uniform(1.0, 2.0))  # zoom back in so mosaic objects are not all tiny
        else:
            scale = float(rng.uniform(0.6, 1.4))
        free = size * (1 - scale)
        dx, dy = (rng.uniform(min(free, 0), max(free, 0), 2) if abs(free) > 1 else (free / 2, free / 2))
        img, tgt = _zoom(img, tgt, scale, dx, dy)
        tgt = _clip_boxes(tgt, size)
        if rng.random() < 0.5:
            img = img.flip(-1)
            tgt = tgt[:, [0, 3, 2, 1, 4]] * torch.tensor([1, -1, 1, -1, 1]) + torch.tensor([0, size, 0, size, 0])
        if rng.random() < 0.5:
            img = img.flip(-2)
            tgt = tgt[:, [0, 1, 4, 3, 2]] * torch.tensor([1, 1, -1, 1, -1]) + torch.tensor([0, 0, size, 0, size])
        # photometric jitter: brightness, contrast, saturation
        grey = img.mean(0, keepdim=True)
        img = grey + (img - grey) * float(rng.uniform(0.6, 1.4))
        img = (img - img.mean()) * float(rng.uniform(0.75, 1.25)) + img.mean()
        img = img * float(rng.uniform(0.75, 1.25))
        out_imgs.append(img.clamp(0, 1))
        out_tgts.append(tgt)
    return torch.stack(out_imgs), out_tgts
