"""Devices that run bundles (the ``Device`` contract in ``core/contracts.py``): this machine now; remote boards
(SSH) and phones (adb) plug in beside it, one module per kind, registered in ``core/registry.py``.

May import: ``edgeopt.errors``, ``edgeopt.core``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeopt.core.contracts import Device
from edgeopt.core.registry import DEVICES
from edgeopt.errors import ConfigError, did_you_mean


def load_device(spec: str, search: Path = Path("devices")) -> Device:
    """A device from a profile name (``local`` or ``devices/<name>.yaml``) or a path to a profile YAML."""
    path = Path(spec)
    if not path.suffix:
        path = search / f"{spec}.yaml"
    if not path.is_file():
        if spec == "local":
            return DEVICES.create("local")
        known = sorted({"local", *(p.stem for p in search.glob("*.yaml"))}) if search.is_dir() else ["local"]
        raise ConfigError(f"device profile not found: {spec}", hint=did_you_mean(spec, known) or (
            f"devices: {', '.join(known)}; describe a board in {search / (path.stem + '.yaml')} (host, user; "
            "see the README's 'Benchmark on your Raspberry Pi')"))
    try:
        profile = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"device profile {path} is not readable YAML: {exc}") from None
    if not isinstance(profile, dict):
        raise ConfigError(f"device profile {path} must be a mapping of keys (found {type(profile).__name__})")
    kind = profile.get("kind", "ssh" if "host" in profile else "local")  # a host to reach is a remote board
    if kind not in DEVICES:
        raise ConfigError(f"device {path}: unknown kind '{kind}'",
                          hint=did_you_mean(kind, DEVICES.names) or f"kinds: {', '.join(DEVICES.names)}")
    profile.setdefault("name", path.stem)
    return DEVICES.create(kind, profile, str(path))


# what changes from one reading to the next and so must not change a cache key
VOLATILE = frozenset({"temperature_c", "throttled", "mem_available_mb", "runtimes"})


def device_identity(info: dict[str, Any], target: str | None = None) -> dict[str, Any]:
    """The parts of ``describe()`` that make a figure comparable (a cache key): not temperature or free memory;
    of the runtimes only ``target``'s module and version (adding another target re-times nothing)."""
    identity = {k: v for k, v in info.items() if k not in VOLATILE}
    runtime = (info.get("runtimes") or {}).get(target or "")
    if runtime:
        identity["runtime"] = {k: runtime.get(k) for k in ("module", "version", "ok")}
    return identity
