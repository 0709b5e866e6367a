"""``prune.allocation: latency``: the cut placed where the artifact that ships saves the most time per unit of
accuracy it costs.

A uniform ratio thins every layer alike, but a runtime's time is not spread like the MACs: an int8 kernel on a
wide, low-resolution layer may be fast per MAC where a high-resolution one is memory bound. So the prunable
layers (torch-pruning's groups, in module order) are split into ``prune.latency.blocks`` consecutive blocks of
about equal MACs, and each block is measured on its own, pruned at PROBE_RATIO with the rest untouched:

- the time it saves: its artifact exported and timed beside the unpruned one on the device, as the ratio search
  times every candidate (one cache entry per artifact, so the table is measured once per device, runtime,
  precision and model);
- what it costs: how far the model's raw outputs move on the calibration images (:func:`output_distortion`).

A block's ratio is then proportional to its time saved per unit of distortion. That is the optimum when time
saved grows linearly with a block's ratio and distortion quadratically (the least important channels go
first): minimising the summed distortion for a given time saved gives each block ratio ``lambda * saved /
distortion``, up to HIGHEST (a block that reaches it stays there while the others go on). The ratio search then
bisects the mean of the blocks' ratios (reported as the ratio) against the measured end-to-end latency, as for a
uniform cut, and the same per-layer ratios prune the model that is recovered and shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.models.pruning import output_distortion, prunable_blocks
from edgeopt.stages.prune_latency import HIGHEST, CandidateLatency, depth_baseline, depth_only

PROBE_RATIO = 0.5  # each block is measured pruned this much: enough time saved to stand out of timing noise
DISTORTION_IMAGES = 16  # calibration images the output distortion is measured on


@dataclass(frozen=True)
class LatencyAllocation:
    """Blocks of prunable convolutions (by module name) and each block's ratio relative to the mean."""

    blocks: list[list[str]]
    weights: list[float]
    table: list[dict[str, Any]]

    def block_ratios(self, ratio: float) -> list[float]:
        """Each block's ratio when the blocks' mean is ``ratio``: ``scale * weight``, at most HIGHEST. A block
        that reaches HIGHEST stops there and the others take the rest of the mean, so every mean a set of
        unsaturated blocks could reach is reached (up to all blocks with any weight at HIGHEST)."""
        def at(scale: float) -> list[float]:
            return [min(HIGHEST, scale * w) for w in self.weights]

        positive = [w for w in self.weights if w > 0]
        lo, hi = 0.0, HIGHEST / min(positive)  # at hi every block with a weight is at HIGHEST
        for _ in range(60):  # the mean grows with the scale: bisect it
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sum(at(mid)) / len(self.weights) < ratio else (lo, mid)
        return [round(r, 4) for r in at(hi)]

    def overrides(self, ratio: float) -> dict[str, float]:
        """Per-convolution pruning ratios when the blocks' mean ratio is ``ratio``."""
        return {name: r for block, r in zip(self.blocks, self.block_ratios(ratio), strict=True) for name in block}

    def describe(self) -> dict[str, Any]:
        """What prune.json records: the probe ratio and, per block, its layers, measurements and weight."""
        return {"probe_ratio": PROBE_RATIO, "blocks": self.table}


def allocation_weights(saved: list[float], distortion: list[float]) -> list[float]:
    """Each block's ratio relative to the mean: proportional to time saved per unit of distortion. A block that
    saved no time (within timing noise, or slower) is not pruned, nor one whose probe changed nothing (distortion
    0: layers too small to cut at the channel multiple), whatever timing noise said it saved.

    Raises ConfigError when no block saved any time."""
    efficiency = [max(s, 0.0) / d if d > 0 else 0.0 for s, d in zip(saved, distortion, strict=True)]
    mean = sum(efficiency) / len(efficiency)
    if mean <= 0:
        raise ConfigError("prune.allocation 'latency': pruning no block of the model saved measurable time on the "
                          "latency artifact", hint="use prune.allocation 'uniform', or measure another target")
    return [e / mean for e in efficiency]


def measure_allocation(measure: CandidateLatency, round_to: int, log: Any = print) -> LatencyAllocation:
    """Time and distortion of each block pruned at PROBE_RATIO alone (against the model with prune.drop_blocks
    dropped, when some are), and the weights they give."""
    source, cfg, ctx = measure.source, measure.cfg, measure.ctx
    if ctx.calib is None:
        raise ConfigError("prune.allocation 'latency' measures output distortion on calibration images: add the "
                          "calibrate stage")
    blocks = prunable_blocks(source.module, cfg, source.input_size, cfg.latency.blocks, source.pruning)
    if not blocks:
        raise ConfigError("prune.allocation 'latency': the model has no layer to prune (prune.ignored keeps them "
                          "all)", hint="shrink prune.ignored")
    images = ctx.calib.images[:DISTORTION_IMAGES]
    reference, base_speedup = source.module, 1.0
    if cfg.drop_blocks:  # weighed against the model with its blocks dropped: that cut's time and distortion are
        reference = depth_only(measure, round_to)  # not the channel blocks' own
        base_speedup = depth_baseline(measure, round_to, reference)["speedup"]
    table = []
    for i, block in enumerate(blocks):
        # the configured overrides still win: a layer the user keeps stays kept in the probe too
        student = measure.prune(0.0, round_to, {**dict.fromkeys(block, PROBE_RATIO), **cfg.overrides})
        label = f"block {i + 1}/{len(blocks)} ({block[0]} .. {block[-1]}) pruned at {PROBE_RATIO}"
        figures = measure.timed(student, label, tolerance=cfg.latency.tolerance)  # blocks are compared
        table.append({"first": block[0], "last": block[-1], "convolutions": len(block), "macs": figures["macs"],
                      "speedup": figures["speedup"], "saved": round(1 - figures["speedup"] / base_speedup, 4),
                      "distortion": float(f"{output_distortion(reference, student, images):.4g}")})
    weights = allocation_weights([row["saved"] for row in table], [row["distortion"] for row in table])
    for row, weight in zip(table, weights, strict=True):
        row["weight"] = round(weight, 4)
        log(f"block {row['first']} .. {row['last']}: {row['saved']:.1%} of the time saved, output distortion "
            f"{row['distortion']:.4g}, ratio x{weight:.2f} of the mean")
    return LatencyAllocation(blocks, [row["weight"] for row in table], table)
