"""The embedded reference detector: a compact anchor-free one-stage detector.

Built for the pipeline rather than for a leaderboard:

* only plain ``Conv2d -> BatchNorm2d -> ReLU`` blocks, residual adds, concatenation, nearest upsampling and
  max-pooling, which every target runtime runs natively and quantizes well
  (ReLU fuses into the int8 convolution everywhere; dense 3x3 convolutions gain most from int8);
* no ``chunk``/``split`` of a tensor, so torch-pruning's dependency graph follows every block;
* three output scales (strides 8, 16, 32).

The deployable output is one tensor ``(1, 4 + C, N)``: per anchor the box as centre-x, centre-y, width, height
normalised by the input size (so boxes and scores share the range [0, 1], which keeps a fully-quantized output
usable) followed by C sigmoid class scores: the dense layout the shared numpy decoder reads for every family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class ReferenceConfig:
    """Architecture of the reference detector; saved next to the weights so a checkpoint rebuilds itself.

    ``widths`` are the output channels of the stem and the four downsampling stages (strides 2..32);
    ``depths`` the residual blocks after stages 2..5; ``neck`` and ``head`` the channels of the neck and of the
    head branches.
    """

    num_classes: int = 6
    input_size: int = 320
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    neck: tuple[int, ...] = (64, 96, 128)
    head: int = 64
    class_names: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """A JSON/``weights_only``-safe description of the architecture."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class ConvBNReLU(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> ``ReLU``; BN folds into the conv at export."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 reduce then 3x3 expand, added to the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(c, c // 2, 1)
        self.expand = ConvBNReLU(c // 2, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class CSPStage(nn.Module):
    """Cross-stage block written without ``chunk``: two parallel 1x1 convs, bottlenecks on one, concat, fuse."""

    def __init__(self, c_in: int, c_out: int, n: int) -> None:
        super().__init__()
        hidden = c_out // 2
        self.main = ConvBNReLU(c_in, hidden, 1)
        self.short = ConvBNReLU(c_in, hidden, 1)
        self.blocks = nn.Sequential(*(Bottleneck(hidden) for _ in range(n)))
        self.fuse = ConvBNReLU(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat((self.blocks(self.main(x)), self.short(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): repeated 5x5 max-pools widen the receptive field cheaply."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(c, c // 2, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.fuse = ConvBNReLU(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.fuse(torch.cat((x, p1, p2, self.pool(p2)), 1))


class HeadBranch(nn.Module):
    """Decoupled head of one scale: a box branch (4 distances) and a class branch (C logits)."""

    def __init__(self, c_in: int, c_mid: int, num_classes: int) -> None:
        super().__init__()
        self.box = nn.Sequential(ConvBNReLU(c_in, c_mid, 3), nn.Conv2d(c_mid, 4, 1))
        self.cls = nn.Sequential(ConvBNReLU(c_in, c_mid, 3), nn.Conv2d(c_mid, num_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box(x), self.cls(x)


class ReferenceDetector(nn.Module):
    """Backbone (CSP stages + SPPF), PAN neck and decoupled head over strides 8/16/32."""

    def __init__(self, config: ReferenceConfig) -> None:
        super().__init__()
        self.config = config
        w, d, n = config.widths, config.depths, config.neck
        self.stem = ConvBNReLU(3, w[0], 3, 2)
        self.stage2 = nn.Sequential(ConvBNReLU(w[0], w[1], 3, 2), CSPStage(w[1], w[1], d[0]))
        self.stage3 = nn.Sequential(ConvBNReLU(w[1], w[2], 3, 2), CSPStage(w[2], w[2], d[1]))
        self.stage4 = nn.Sequential(ConvBNReLU(w[2], w[3], 3, 2), CSPStage(w[3], w[3], d[2]))
        self.stage5 = nn.Sequential(ConvBNReLU(w[3], w[4], 3, 2), CSPStage(w[4], w[4], d[3]), SPPF(w[4]))
        # top-down path
        self.lat5 = ConvBNReLU(w[4], n[1], 1)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = CSPStage(n[1] + w[3], n[1], 1)
        self.lat4 = ConvBNReLU(n[1], n[0], 1)
        self.td3 = CSPStage(n[0] + w[2], n[0], 1)
        # bottom-up path
        self.down3 = ConvBNReLU(n[0], n[0], 3, 2)
        self.bu4 = CSPStage(n[0] + n[0], n[1], 1)
        self.down4 = ConvBNReLU(n[1], n[1], 3, 2)
        self.bu5 = CSPStage(n[1] + n[1], n[2], 1)
        self.heads = nn.ModuleList(HeadBranch(c, config.head, config.num_classes) for c in n)

    def forward_raw(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per scale, the raw box map ``(B, 4, H, W)`` and class logits ``(B, C, H, W)`` (used by training)."""
        c3 = self.stage3(self.stage2(self.stem(x)))
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        p5 = self.lat5(c5)
        p4 = self.td4(torch.cat((self.up(p5), c4), 1))
        p4l = self.lat4(p4)
        p3 = self.td3(torch.cat((self.up(p4l), c3), 1))
        n4 = self.bu4(torch.cat((self.down3(p3), p4l), 1))
        n5 = self.bu5(torch.cat((self.down4(n4), p5), 1))
        return [head(f) for head, f in zip(self.heads, (p3, n4, n5), strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deployable output ``(B, 4 + C, N)``: normalised cx, cy, w, h and sigmoid class scores."""
        return deployable_output(self.forward_raw(x), x.shape[-2], x.shape[-1])


def anchor_points(raw: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres ``(N, 2)`` in input pixels and their strides ``(N, 1)``, in the order of the output."""
    points, strides = [], []
    for (box, _), stride in zip(raw, STRIDES, strict=True):
        h, w = box.shape[-2:]
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        strides.append(torch.full((h * w, 1), float(stride)))
    return torch.cat(points).to(raw[0][0].device), torch.cat(strides).to(raw[0][0].device)


def decode_raw(
    raw: list[tuple[torch.Tensor, torch.Tensor]], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(B, 4, N)`` as x1, y1, x2, y2 in input pixels and class logits ``(B, C, N)``.

    A box is the anchor point minus/plus softplus distances (left, top, right, bottom) in units of the stride;
    softplus keeps distances positive with a smooth gradient and is a native op on every target.
    """
    points, strides = anchor_points(raw)
    dist = torch.cat([b.flatten(2) for b, _ in raw], 2)  # (B, 4, N)
    logits = torch.cat([c.flatten(2) for _, c in raw], 2)  # (B, C, N)
    dist = F.softplus(dist) * strides.T.unsqueeze(0)
    pts = points.T.unsqueeze(0)  # (1, 2, N)
    boxes = torch.cat((pts - dist[:, :2], pts + dist[:, 2:]), 1)
    return boxes, logits


def deployable_output(raw: list[tuple[torch.Tensor, torch.Tensor]], height: int, width: int) -> torch.Tensor:
    """``(B, 4 + C, N)``: box centre and size normalised by the input size, then sigmoid class scores."""
    boxes, logits = decode_raw(raw, height, width)
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device).view(1, 4, 1)
    xy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat((torch.cat((xy, wh), 1) / scale, logits.sigmoid()), 1)


def build_reference(config: ReferenceConfig | None = None) -> ReferenceDetector:
    """Build a reference detector (random initialisation) with sensible head biases for fast convergence."""
    model = ReferenceDetector(config or ReferenceConfig())
    for head, stride in zip(model.heads, STRIDES, strict=True):
        cls_conv = head.cls[-1]
        # prior: ~0.01 objects per cell of this stride, as in RetinaNet's bias init
        nn.init.constant_(cls_conv.bias, float(torch.log(torch.tensor(5.0 / model.config.num_classes / (640 / stride) ** 2))))
        nn.init.constant_(head.box[-1].bias, 1.0)
    return model
