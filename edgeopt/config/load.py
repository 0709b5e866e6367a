"""YAML loading, ``--set`` overrides and readable validation errors (key path, what was found, did-you-mean)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from edgeopt.config.schema import PipelineConfig
from edgeopt.core.registry import TARGETS
from edgeopt.errors import ConfigError, did_you_mean


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModels inside an annotation (``X``, ``X | None``, ``list[X]``, a union of sections)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _tag(model: type[BaseModel]) -> Any:
    """The literal ``name`` of a member of a discriminated union (a target section), else None."""
    field = model.model_fields.get("name")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and get_origin(field.annotation) is Literal else None


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """Field names of the config section at ``path`` (for did-you-mean on an unknown key)."""
    current = [model]
    for part in path:
        if isinstance(part, int):
            continue
        tagged = [m for m in current if _tag(m) == part]
        if tagged:  # pydantic names the union member by its tag in the error location
            current = tagged
            continue
        current = [inner for m in current if part in m.model_fields
                   for inner in _models_in(m.model_fields[part].annotation)]
    return list(dict.fromkeys(f for m in current for f in m.model_fields)) if len(current) == 1 else []


def explain_errors(exc: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's errors into one ConfigError that names each key and suggests a fix."""
    lines, hint = [], None
    for err in exc.errors():
        loc = tuple(err["loc"])
        # a target section's tag (its name) is part of pydantic's location; users never write it
        key = ".".join(str(p) for i, p in enumerate(loc)
                       if not (i and isinstance(loc[i - 1], int) and p in TARGETS)) or "(top level)"
        if err["type"] == "union_tag_invalid":
            tag = str(err.get("ctx", {}).get("tag", err.get("input")))
            suggestion = did_you_mean(tag, TARGETS.names)
            lines.append(f"'{key}': unknown target '{tag}'" + (f" ({suggestion})" if suggestion else "")
                         + f"; targets are {', '.join(TARGETS.names)}")
            hint = hint or suggestion
        elif err["type"] == "literal_error" and len(loc) > 3 and loc[0] == "targets" and loc[3] == "precisions":
            expected = err.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ")
            lines.append(f"target '{loc[2]}' has no precision '{err.get('input')}'")
            hint = hint or f"it offers {expected}"
        elif err["type"] == "extra_forbidden":
            suggestion = did_you_mean(str(loc[-1]), _fields_at(PipelineConfig, loc[:-1]))
            lines.append(f"unknown key '{key}'" + (f" ({suggestion})" if suggestion else ""))
            hint = hint or suggestion
        elif err["type"] == "missing":
            lines.append(f"missing key '{key}'")
        else:
            found = err.get("input")
            shown = json.dumps(found) if isinstance(found, (str, int, float, bool, type(None))) else type(found).__name__
            lines.append(f"'{key}': {err['msg']} (found {shown})")
    return ConfigError(f"invalid config {source}: " + "; ".join(lines), hint=hint or "see `edgeopt schema`")


def _parse_value(text: str) -> Any:
    """A ``--set`` value is read as YAML (numbers, booleans, lists), safely."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (list items by index: ``targets.0.precisions=[fp32]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}", hint="e.g. --set benchmark.runs=100")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_index(part, node, key)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, node, key)] = _parse_value(value)
        elif isinstance(node, dict):
            node[last] = _parse_value(value)
        else:
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:-1])}' is not a section")
    return data


def _index(part: str, node: list, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: '{part}' is not an index of a list of {len(node)} items")
    return int(part)


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline config; every problem is a ``ConfigError``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file", hint="give the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, found {type(data).__name__}")
    if "sweep" in data:
        raise ConfigError(f"{path} is a sweep file (it has a 'sweep:' section)", hint=f"edgeopt sweep {path}")
    return validate_config(apply_overrides(data, overrides or []), str(path))


def validate_config(data: Any, source: str) -> PipelineConfig:
    """A config's parsed YAML as a PipelineConfig; a ConfigError naming each bad key (from ``source``)."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise explain_errors(exc, source) from None


def json_schema() -> dict:
    """The JSON schema of the pipeline config (``edgeopt schema``)."""
    return PipelineConfig.model_json_schema()
