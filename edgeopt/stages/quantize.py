"""quantize: *plan* INT8 from the calibration statistics; each target's quantizer realises the plan at export.

The plan (:class:`~edgeopt.core.quant.QuantPlan`) is target-independent: calibration method, per-channel
weights, what stays in float, the channel multiple pruning rounds to (so int8 kernels stay efficient), and the
layers whose activation range has outliers (max far above the 99.99th percentile), for which a clipping
calibration (percentile/entropy) is advised in the run's results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.config.schema import QuantizeConfig
from edgeopt.core.cache import stable_hash
from edgeopt.core.contracts import Stage
from edgeopt.core.quant import QuantPlan
from edgeopt.errors import ConfigError

OUTLIER_RATIO = 8.0  # max / p99.99 above this marks a layer whose range a min-max calibration would waste


def plan_quantization(cfg: QuantizeConfig, stats: dict[str, dict[str, float]]) -> QuantPlan:
    """The plan for this config and these activation statistics."""
    outliers = sorted(name for name, s in stats.items()
                      if s["p9999"] > 0 and max(abs(s["min"]), abs(s["max"])) / s["p9999"] > OUTLIER_RATIO)
    return QuantPlan(method=cfg.method, percentile=cfg.percentile, per_channel=cfg.per_channel,
                     keep_head_float=cfg.keep_head_float, keep_float=list(cfg.keep_float), outlier_layers=outliers)


class QuantizeStage(Stage):
    """Write ``plan.json``; export hands it to every target's own quantizer."""

    name = "quantize"

    def check(self, ctx: Any) -> None:
        if "calibrate" not in ctx.config.stages:
            raise ConfigError("the 'quantize' stage needs the 'calibrate' stage (its activation statistics)")

    def key(self, ctx: Any, item: Any) -> str:
        return stable_hash("quantize", ctx.config.quantize.model_dump(), ctx.calib_key, self.code(__name__))

    def run(self, ctx: Any, item: Any, out: Path) -> None:
        plan_quantization(ctx.config.quantize, ctx.calib.stats).save(out)

    def load(self, ctx: Any, item: Any, out: Path) -> None:
        ctx.plan = QuantPlan.load(out)
