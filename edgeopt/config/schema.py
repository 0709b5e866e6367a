"""The pipeline configuration as pydantic v2 models (``extra="forbid"``: a typo is an error, not a no-op)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgeopt.config.base import Strict, TargetSection
from edgeopt.core.registry import STAGES as STAGE_REGISTRY
from edgeopt.core.registry import TARGETS, resolve

STAGES = STAGE_REGISTRY.names
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CODE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # package.module:attribute


class ModelConfig(Strict):
    """Where the detector comes from: the embedded reference, edgeopt weights, a third-party checkpoint, any
    torch module built by a factory, or an ONNX file."""

    source: str = Field("reference", description=(
        "'reference' (the embedded detector), a .pt file (edgeopt weights or a third-party checkpoint), "
        "an .onnx file, or 'package.module:factory' (a function returning a torch module)"))
    input_size: int | None = Field(None, ge=32, le=2048, description=(
        "Square model input side in pixels (multiple of 32); default: the checkpoint's training size, else 320"))
    trust_pickle: bool = Field(False, description=(
        "Allow loading a checkpoint that is a full Python pickle (some third-party .pt files): it can run code, so opt in "
        "only for files you trust"))
    trust_code: bool = Field(False, description=(
        "Allow 'package.module:factory' and 'package.module:function' decoders: edgeopt imports and runs that "
        "code, so opt in only for code you trust"))
    weights: str | None = Field(None, description="For 'module:factory': a state_dict file loaded into the module")
    factory_args: dict[str, Any] = Field(default_factory=dict, description="For 'module:factory': keyword arguments")
    decoder: str = Field("yolo", description=(
        "For 'module:factory' and .onnx: the output layout, 'yolo' ((1, 4 + C, N), cx cy w h in input pixels, "
        "then class scores in [0, 1]), 'yolo_normalized' (boxes divided by the input size), 'end2end' "
        "((1, K, 6): x1 y1 x2 y2 in pixels, score, class), or 'package.module:function' (torch code mapping the "
        "module's output to the 'yolo' layout, traced into every export)"))
    head: Literal["auto", "end2end", "nms"] = Field("auto", description=(
        "For a detector with two heads (a one-to-one branch beside the one-to-many one): 'end2end' (one-to-one, "
        "no NMS), 'nms' (one-to-many + NMS), or 'auto': both are scored on the validation set and the end-to-end head is exported when it is "
        "within parity.max_map_drop.fp32 of the better one (without a labelled validation set: the head the "
        "checkpoint was saved with). A runtime that cannot run the end-to-end head exports 'nms' regardless"))
    class_names: list[str] | None = Field(None, description=(
        "Class names, for sources that do not carry them (default: from the checkpoint or ONNX metadata, "
        "else the validation set)"))

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError(f"must be a multiple of 32 (the largest stride), got {v}")
        return v

    @model_validator(mode="after")
    def _code_needs_trust(self) -> ModelConfig:
        for key in ("source", "decoder"):
            ref = getattr(self, key)
            if CODE_REF.fullmatch(ref) and not self.trust_code:
                raise ValueError(f"model.{key} {ref!r} imports and runs Python code; set model.trust_code: true "
                                 "if you trust it")
        return self


class DatasetConfig(Strict):
    """A dataset: a YOLO data.yaml (or its directory), a COCO json, an image folder, or ``synthetic``."""

    path: str = Field(description="Dataset path, or 'synthetic' for the generated reference dataset")
    split: str = Field("val", description="Split of a YOLO dataset")
    images: int | None = Field(None, ge=1, description="Use only the first N images")
    seed: int = Field(1000, ge=0, description="Seed of a synthetic dataset (differs from the training seed 0)")
    images_dir: str | None = Field(None, description="Image directory for a COCO json")


class DataConfig(Strict):
    """Calibration images (labels not needed) and the labelled validation set for mAP."""

    calibration: DatasetConfig
    validation: DatasetConfig | None = None


class CalibrateConfig(Strict):
    """The calibration set, stored once and shared by every target's quantizer."""

    images: int = Field(64, ge=1, le=10000, description="Number of calibration images")
    parity_images: int = Field(8, ge=1, le=1000, description="Held-out validation images for parity checks")


class QuantizeConfig(Strict):
    """The INT8 plan, realised by each target's own quantizer at export."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100, description="For method: percentile")
    per_channel: bool = True
    keep_head_float: bool = Field(True, description="Keep the final head convolutions and the decode in float")
    keep_float: list[str] = Field(default_factory=list, description=(
        "Extra regexes (re.search) over each runtime's own names to keep in float (ONNX node names, tensor or "
        "layer names: see README)"))
    max_drop: float | None = Field(None, ge=0, description=(
        "INT8 to an accuracy budget, in mAP50-95 points: each int8 artifact's mAP is measured through its own "
        "runtime on the validation set and, while it loses more than this against the float model, the decode, the "
        "head and then deeper levels of convolutions from the outputs are kept float (a few exports at most); a "
        "row that cannot meet it is failed. Default: off (one export with the plan as configured)"))

    @field_validator("keep_float")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return v


class RecoveryConfig(Strict):
    """Accuracy recovery after pruning: fine-tune on labels, or distil from the unpruned model without labels."""

    mode: Literal["auto", "finetune", "distill", "none"] = Field(
        "auto", description="auto: finetune when 'data' is labelled, else distill")
    data: DatasetConfig | None = Field(None, description="Training images (labelled for finetune; any for distill)")
    epochs: int = Field(5, ge=0, le=1000)
    time_budget_s: float | None = Field(None, gt=0, description="Stop recovery after this many seconds")
    lr: float = Field(1e-3, gt=0)
    batch: int = Field(32, ge=1)
    val_images: int = Field(200, ge=1, description="Validation images for best-checkpoint selection")
    feature_weight: float = Field(0.0, ge=0, description=(
        "Weight of feature imitation: the pruned model's multi-scale features (what its head reads) pulled "
        "towards the unpruned model's, through 1x1 adaptors; 0 matches the outputs only"))


class LatencyConfig(Strict):
    """The artifact whose measured latency ``prune.target_speedup`` is judged on."""

    target: str | None = Field(None, description="A configured target (default: the first)")
    precision: str | None = Field(None, description="One of that target's precisions (default: int8 if configured, "
                                                    "else its first)")
    device: str | None = Field(None, description="A configured device (default: the first)")
    threads: int = Field(1, ge=1)
    runs: int = Field(30, ge=5, description="Timed runs per measurement, at least (more for a fast artifact: "
                                            "0.5 s per timing; the median is used)")
    margin: float = Field(0.02, ge=0.0, lt=0.5, description=(
        "Aim this fraction below target_speedup: two timings of one pair of artifacts differ by 2-4% on a "
        "shared machine, so a ratio found just at the target may miss it when measured again"))
    blocks: int = Field(4, ge=1, le=32, description=(
        "With prune.allocation 'latency': consecutive blocks of about equal MACs, each measured pruned alone"))
    tolerance: float = Field(0.02, gt=0.0, le=1.0, description=(
        "Measurements compared with each other (allocation probes, round_to: auto's multiples, the model with "
        "drop_blocks dropped) are timed for more rounds, up to 25, until their median ratio to the unpruned "
        "artifact is known within this (a ~95% interval); 1: the 5 rounds of any measurement"))


class PruneConfig(Strict):
    """Structured (channel) pruning with torch-pruning, then recovery."""

    ratio: float | None = Field(0.3, ge=0.0, lt=1.0, description="Channel pruning ratio per layer group")
    target_macs_reduction: float | None = Field(None, gt=0.0, lt=1.0,
                                                description="Instead of ratio: prune until MACs fall by this fraction")
    target_speedup: float | None = Field(None, gt=0.0, lt=1.0, description=(
        "Instead of ratio: prune until the artifact of prune.latency, measured on its device, runs in this fraction "
        "of the unpruned one's latency (0.75: 25% faster)"))
    target_latency_ms: float | None = Field(None, gt=0.0, description=(
        "Instead of ratio: prune until the artifact of prune.latency, measured on its device, runs in at most this "
        "many milliseconds (the unpruned artifact is measured there first; the target becomes the fraction of its "
        "latency, as target_speedup)"))
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = "l2"
    allocation: Literal["uniform", "global", "latency"] = Field("uniform", description=(
        "uniform: every layer at the ratio; global: the least important channels model-wide; latency: each block "
        "of layers at a ratio proportional to the time it saves per unit of output distortion, measured on the "
        "artifact of prune.latency (needs target_speedup or target_latency_ms)"))
    round_to: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(None, description=(
        "Channel multiple; default from the quantization plan (8). auto: the multiple (8, 16, 32, 64) "
        "whose pruning saves the artifact of prune.latency the most time per MAC removed, measured on its device"))
    ignored: list[str] | None = Field(None, description=(
        "Module-name globs whose output channels are kept (output convs always are); default: the model family's "
        "own (e.g. stem and detection head)"))
    overrides: dict[str, float] = Field(default_factory=dict, description="Module-name glob -> pruning ratio")
    drop_blocks: int = Field(0, ge=0, description=(
        "Residual blocks (a module returning its input plus a branch) removed whole before channel pruning: those "
        "whose removal alone moves the outputs least on the calibration images. Fewer operators, which channel "
        "pruning never removes: what a runtime with high per-operator costs (ONNX Runtime int8) needs"))
    input_size: int | None = Field(None, ge=32, description=(
        "Input size to prune and recover at (default: model.input_size). The pruned weights then serve every "
        "exported size: a sweep over model.input_size prunes and recovers each ratio once (unless taylor importance or "
        "drop_blocks read its calibration images)"))
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)


def _target_sections() -> tuple[type[TargetSection], ...]:
    """Each registered target's config section (light pydantic modules: no runtime is imported)."""
    return tuple(resolve(TARGETS.entry(name).config) for name in TARGETS.names)


# a target section is chosen by its ``name``; its precisions and options are that target's own
TargetConfig = Annotated[Union[_target_sections()], Field(discriminator="name")]  # noqa: UP007


# Defaults a broken artifact cannot pass: zeroed or class-swapped scores give a score cosine near 0 and a score
# error of the top score; boxes shifted by 3% of the input fail box agreement on the default config (0.42), by 6%
# the int8 box error too. The int8 figures leave headroom over what sound int8 artifacts measured (worst of the
# embedded default and two third-party nano detectors on every runtime: score cosine 0.976, score error 0.51, box
# error 0.018, box agreement 0.89).
TOLERANCES = {
    "min_score_cosine": {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.998, "int8": 0.95},
    "max_score_error": {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "int8": 0.6},
    "max_box_error": {"fp32": 1e-3, "fp16": 1e-2, "bf16": 2e-2, "int8": 0.05},
    "min_box_agreement": {"fp32": 0.98, "fp16": 0.95, "bf16": 0.9, "int8": 0.75},
    # accuracy budget: mAP50-95 points an artifact may lose against the model it was exported from, on the
    # validation set; int8 2.0 until accuracy-aware INT8 exists (plain ONNX Runtime QDQ measured 1.39 and 1.56 pt
    # on two third-party nano detectors, 32 validation images)
    "max_map_drop": {"fp32": 0.5, "fp16": 0.5, "bf16": 0.5, "int8": 2.0},
}


class ParityConfig(Strict):
    """Tolerances of the parity gate, per precision. Scores and boxes are judged apart: the cosine and max abs error
    of the class scores, the max abs error of the boxes (in input sizes) where the reference detects, and the
    agreement of decoded detections. A partial setting (``min_score_cosine: {fp32: 0.99999}``) overrides those
    precisions only; the others keep their defaults."""

    min_score_cosine: dict[str, float] = Field(default_factory=lambda: dict(TOLERANCES["min_score_cosine"]))
    max_score_error: dict[str, float] = Field(default_factory=lambda: dict(TOLERANCES["max_score_error"]))
    max_box_error: dict[str, float] = Field(default_factory=lambda: dict(TOLERANCES["max_box_error"]))
    min_box_agreement: dict[str, float] = Field(default_factory=lambda: dict(TOLERANCES["min_box_agreement"]))
    max_map_drop: dict[str, float] = Field(default_factory=lambda: dict(TOLERANCES["max_map_drop"]), description=(
        "mAP50-95 points (0-100 scale) each precision may lose against the torch model it was exported from (the "
        "pruned one when pruning ran) on the validation set; a row over it is failed and not shipped (judged when "
        "the benchmark computes mAP)"))
    min_boxes: int = Field(5, ge=1, description=(
        "Detections box agreement must count over the parity images; with fewer at the 0.25 deploy threshold it "
        "is judged at a lower one (down to 0.05), and with fewer still the artifact is 'unverified', not shipped"))
    score_margin: float = Field(0.05, ge=0, lt=0.25, description=(
        "Box agreement: a detection at the 0.25 score threshold on one side matches the other side's box scoring "
        "at least 0.25 minus this (a score 0.26 -> 0.24 is the same detection); scaled with a lower threshold"))

    @field_validator(*TOLERANCES, mode="before")
    @classmethod
    def _over_defaults(cls, v: Any, info: ValidationInfo) -> Any:
        """Merge a per-precision setting over the defaults; an unknown precision is an error, not ignored."""
        if not isinstance(v, dict):
            return v
        unknown = sorted(str(k) for k in v if k not in PRECISIONS)
        if unknown:
            raise ValueError(f"unknown precision {', '.join(unknown)}; precisions are {', '.join(PRECISIONS)}")
        return {**TOLERANCES[info.field_name], **v}


class BenchmarkConfig(Strict):
    """Latency and accuracy measurement."""

    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=50, description="Timed runs (at least 50)")
    threads: int = Field(1, ge=1, le=256)
    map: bool = Field(True, description="Compute mAP on the validation set through each runtime")
    map_on_device: bool = Field(False, description="Also measure mAP on each remote device (validation images "
                                                   "pushed once; detections scored here): the device's own kernels")
    profile: bool = Field(False, description="Also time each operator with the runtime's own profiler (after the "
                                             "latency runs): top operators per row in the report, int8 vs fp32")
    unpruned_twin: bool = Field(True, description=(
        "With the prune stage: each pruned bundle is timed in alternation with its unpruned twin (the same "
        "config's bundle of the unpruned model, exported once and cached, never shipped) on every device, so each "
        "row says what pruning bought there (x_unpruned); one slower than its twin is said"))


class PipelineConfig(Strict):
    """A whole edgeopt run."""

    version: Literal[1] = 1
    name: str = "run"
    seed: int = 0
    output: str = Field("runs/run", description="Run directory (results, artifacts, cache)")
    stages: list[str] = Field(default_factory=lambda: ["calibrate", "quantize", "export", "benchmark"])
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    targets: list[TargetConfig]
    device: str | list[str] = Field("local", description="Device profile(s): a name in devices/ or a path to a "
                                                          "profile YAML; several give one row per artifact x device")
    parity: ParityConfig = Field(default_factory=ParityConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in STAGES:
                raise ValueError(f"unknown stage '{s}'; stages are {', '.join(STAGES)}")
        order = [STAGES.index(s) for s in v]
        if order != sorted(order) or len(set(v)) != len(v):
            raise ValueError(f"stages must be unique and in the order {' -> '.join(STAGES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if not self.targets:
            raise ValueError("list at least one target")
        if "benchmark" in self.stages and self.benchmark.map and self.data.validation is None:
            raise ValueError("benchmark.map needs data.validation (a labelled dataset)")
        if self.prune.target_speedup is not None or self.prune.target_latency_ms is not None:
            self._check_latency_artifact()
        elif self.prune.allocation == "latency":
            raise ValueError("prune.allocation 'latency' scales measured per-block ratios until a latency target is "
                             "met: it needs prune.target_speedup or prune.target_latency_ms")
        return self

    def _check_latency_artifact(self) -> None:
        """prune.latency names a configured target and one of its precisions (its device is checked once the
    profiles are read)."""
        given = [k for k in ("target_speedup", "target_latency_ms", "target_macs_reduction")
                 if getattr(self.prune, k) is not None]
        if len(given) > 1:
            raise ValueError(f"prune: give one of target_speedup, target_latency_ms and target_macs_reduction, not "
                             f"{' and '.join(given)}")
        latency = self.prune.latency
        names = [t.name for t in self.targets]
        if latency.target is not None and latency.target not in names:
            raise ValueError(f"prune.latency.target '{latency.target}' is not a configured target "
                             f"({', '.join(names)})")
        section = self.targets[names.index(latency.target)] if latency.target else self.targets[0]
        if latency.precision is not None and latency.precision not in section.precisions:
            raise ValueError(f"prune.latency.precision '{latency.precision}' is not configured for "
                             f"'{section.name}' ({', '.join(section.precisions)})")

    @field_validator("device")
    @classmethod
    def _devices_listed(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("list at least one device, each once")
        return v

    @property
    def devices(self) -> list[str]:
        """The device profiles to benchmark on, in order."""
        return [self.device] if isinstance(self.device, str) else list(self.device)

    @property
    def output_dir(self) -> Path:
        return Path(self.output)
