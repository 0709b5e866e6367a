"""Configs written for the user: the full config ``edgeopt compress`` builds from a model and a dataset, and the
commented template ``edgeopt init`` writes with every key of the schema at its default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from edgeopt.config.schema import PipelineConfig
from edgeopt.core.registry import TARGETS, resolve


def compress_config(model: str, data: str, targets: list[str], device: list[str], output: str,
                    max_drop: float | None = None, prune: float | None = None, input_size: int | None = None,
                    trust_pickle: bool = False) -> dict[str, Any]:
    """A whole pipeline config for ``model`` on ``data`` (its ``train`` split calibrates, its ``val`` split
    validates): fp32 and int8 on each of ``targets``, benchmarked on ``device``; with ``max_drop``, int8 is
    searched to that budget and judged by it; with ``prune``, that MACs reduction, recovered by fine-tuning."""
    stem = Path(model).stem if model != "reference" else "reference"
    config: dict[str, Any] = {
        "version": 1, "name": stem, "output": output,
        "stages": ["calibrate", "quantize", *(["prune"] if prune else []), "export", "benchmark"],
        "model": {"source": model, **({"input_size": input_size} if input_size else {}),
                  **({"trust_pickle": True} if trust_pickle else {})},
        "data": {"calibration": {"path": data, "split": "train", "images": 128},
                 "validation": {"path": data, "split": "val"}},
        "calibrate": {"images": 128, "parity_images": 16},
        "targets": [{"name": name, "precisions": ["fp32", "int8"]} for name in targets],
        "device": device[0] if len(device) == 1 else device,
    }
    if max_drop is not None:  # the int8 search aims at the budget, and the gate holds every int8 row to it
        config["quantize"] = {"max_drop": max_drop}
        config["parity"] = {"max_map_drop": {"int8": max_drop}}
    if prune:
        config["prune"] = {"ratio": None, "target_macs_reduction": prune, "recovery": {"mode": "finetune",
                                                                                       "data": {"path": data,
                                                                                                "split": "train"}}}
    return config


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else (value if value and value.isidentifier() else
                                                                    json.dumps(value))


def _section(model: type[BaseModel], indent: int, skip: tuple[str, ...] = ()) -> list[str]:
    """``key: default  # description`` for every field of ``model``, nested sections indented."""
    lines = []
    pad = " " * indent
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        note = f"  # {field.description}" if field.description else ""
        nested = [a for a in (field.annotation, *get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and not field.is_required() and field.get_default(call_default_factory=True) is not None:
            lines.append(f"{pad}{name}:{note}")
            lines += _section(nested[0], indent + 2)
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        lines.append(f"{pad}{name}: {_yaml_value(default)}{note}" if not field.is_required() else
                     f"{pad}# {name}: (required){note}")
    return lines


def template(model: str = "reference", data: str = "synthetic") -> str:
    """A commented config: every key the schema offers at its default, the model and data filled in, and every
    installed target with the precisions it offers."""
    lines = ["# edgeopt pipeline config (edgeopt init). Every key is shown at its default; `edgeopt schema` has",
             "# the full reference. Run it with: edgeopt run THIS_FILE", ""]
    lines += _section(PipelineConfig, 0, skip=("model", "data", "targets", "prune", "device"))
    lines += ["model:"] + _section(PipelineConfig.model_fields["model"].annotation, 2, skip=("source",))
    lines.insert(lines.index("model:") + 1, f"  source: {_yaml_value(model)}  # the detector to compress")
    lines += ["data:", "  calibration:  # images to calibrate int8 with (labels not needed)",
              f"    path: {_yaml_value(data)}", "    split: train", "    images: 128",
              "  validation:  # labelled images: parity and mAP", f"    path: {_yaml_value(data)}", "    split: val"]
    lines += ["prune:  # used only when 'prune' is in stages"]
    lines += _section(PipelineConfig.model_fields["prune"].annotation, 2)
    lines += ["targets:  # each with the precisions it offers (fp32, int8 are the usual pair)"]
    for name in TARGETS.names:
        section = resolve(TARGETS.entry(name).config)
        (literal,) = get_args(section.model_fields["precisions"].annotation)
        lines += [f"  - name: {name}", f"    precisions: {json.dumps(list(get_args(literal)))}"]
    lines += ["device: local  # or a profile in devices/ (e.g. pi5), or a list of them"]
    return "\n".join(lines) + "\n"
