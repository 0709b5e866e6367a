"""quantize: *plan* INT8 from the calibration statistics; each target's quantizer realises the plan at export.

The plan is target-independent data: calibration method, per-channel weights, activation/weight types, which
parts stay in float, and the layers whose activation range has outliers (max far above the 99.99th percentile),
for which a clipping calibration (percentile/entropy) is advised. Pruning rounds channel counts to
``channel_multiple`` so the int8 kernels stay efficient.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeopt.config.schema import QuantizeConfig

OUTLIER_RATIO = 8.0  # max / p99.99 above this marks a layer whose range a min-max calibration would waste


@dataclass
class QuantPlan:
    """What INT8 means for this run, shared by every target."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activations: str = "uint8"
    weights: str = "int8"
    keep_head_float: bool = True
    keep_float: list[str] = field(default_factory=list)
    channel_multiple: int = 8
    outlier_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> QuantPlan:
        return cls(**json.loads((path / "plan.json").read_text()))


def plan_quantization(cfg: QuantizeConfig, stats: dict[str, dict[str, float]], out_dir: Path) -> QuantPlan:
    """Write ``plan.json`` into ``out_dir`` and return the plan."""
    outliers = sorted(name for name, s in stats.items()
                      if s["p9999"] > 0 and max(abs(s["min"]), abs(s["max"])) / s["p9999"] > OUTLIER_RATIO)
    plan = QuantPlan(method=cfg.method, percentile=cfg.percentile, per_channel=cfg.per_channel,
                     keep_head_float=cfg.keep_head_float, keep_float=list(cfg.keep_float), outlier_layers=outliers)
    (out_dir / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2))
    return plan
