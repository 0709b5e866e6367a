"""Devices that run bundles: this machine now; remote boards (SSH) and phones (adb) plug in beside it."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeopt.errors import ConfigError, did_you_mean

KINDS = ("local",)


def load_device(spec: str, search: Path = Path("devices")):
    """A device from a profile name (``local`` or ``devices/<name>.yaml``) or a path to a profile YAML."""
    from edgeopt.devices.local import LocalDevice

    path = Path(spec)
    if not path.suffix:
        path = search / f"{spec}.yaml"
    if not path.is_file():
        if spec == "local":
            return LocalDevice()
        known = ["local"] + sorted(p.stem for p in search.glob("*.yaml")) if search.is_dir() else ["local"]
        raise ConfigError(f"device profile not found: {spec}", hint=did_you_mean(spec, known) or f"devices: {', '.join(known)}")
    profile = yaml.safe_load(path.read_text()) or {}
    kind = profile.get("kind", "local")
    if kind not in KINDS:
        raise ConfigError(f"device {path}: unknown kind '{kind}'", hint=did_you_mean(kind, KINDS) or f"kinds: {', '.join(KINDS)}")
    return LocalDevice(profile)
