"""``edgeopt device setup``: runtimes for an offline device, from a wheelhouse built here for its platform.

Boards are often offline, so the wheels are downloaded on this machine for the device's architecture, glibc and
Python (``pip download --platform manylinux_2_X_<arch> --python-version 3Y --only-binary=:all:``), pushed into
``<work_dir>/wheelhouse`` (only files not already there) and installed into ``<work_dir>/venv`` with
``--no-index``. Each runtime is pinned to the version installed here when the device's platform has it (a
runtime older than the converter that wrote a model may not load it); otherwise the newest that exists is taken
and the difference recorded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgeopt.devices.ssh import tar_bytes
from edgeopt.errors import DeviceError

BASE_PACKAGES = ("numpy", "pillow")  # what every bundle's run.py needs besides its runtime
MACHINES = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64", "armv7l": "armv7l"}


def platform_tags(info: dict[str, Any]) -> list[str]:
    """pip ``--platform`` tags for a device: every manylinux tag up to its glibc (too few and pip silently
    picks old releases that carry an older tag)."""
    machine = MACHINES.get(str(info.get("machine")))
    if machine == "aarch64" and info.get("python_bits") == 32:  # 32-bit Raspberry Pi OS on a 64-bit kernel
        machine = "armv7l"
    match = re.match(r"glibc-2\.(\d+)", str(info.get("libc", "")))
    if machine is None or match is None:
        raise DeviceError(f"no wheels for device '{info.get('name')}': machine {info.get('machine')}, "
                          f"libc {info.get('libc') or 'unknown'}",
                          hint="edgeopt installs manylinux wheels (glibc Linux on aarch64, x86_64 or armv7l)")
    return [f"manylinux_2_{minor}_{machine}" for minor in range(17, int(match.group(1)) + 1)] + \
        [f"manylinux2014_{machine}"]


def _host_version(package: str) -> str | None:
    """This machine's version of ``package``, without a local label (torch's ``2.13.0+cpu`` names a build of
    this index only; the device's platform has ``2.13.0`` under its own)."""
    try:
        return version(package).split("+")[0]
    except PackageNotFoundError:
        return None


def _download(requirements: list[str], tags: list[str], python: str, dest: Path,
              no_deps: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           *(["--no-deps"] if no_deps else []),
           "--python-version", python, "--implementation", "cp", "--dest", str(dest),
           *(arg for tag in tags for arg in ("--platform", tag)), *requirements]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_INDEX_URL", "PIP_CERT")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def build_wheelhouse(packages: list[str], info: dict[str, Any], dest: Path,
                     no_deps: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Download ``packages`` (+ numpy, Pillow) with their dependencies (but for those in ``no_deps``) for the
    device described by ``info``; returns the requirement chosen per package and any version that differs from
    this machine's."""
    tags = platform_tags(info)
    python = "".join(str(info.get("python", "")).split(".")[:2])
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(f"cannot create the wheelhouse {dest}: {exc.strerror}", hint="choose another with --wheels") \
            from None
    chosen: dict[str, str] = {}
    notes: list[str] = []
    for package in [*BASE_PACKAGES, *packages]:
        pinned = _host_version(package)
        attempts = [f"{package}=={pinned}", package] if pinned and package not in BASE_PACKAGES else [package]
        for requirement in attempts:
            proc = _download([requirement], tags, python, dest, package in no_deps)
            if proc.returncode == 0:
                chosen[package] = requirement
                if requirement != attempts[0]:
                    notes.append(f"{package}: {attempts[0]} has no wheel for {tags[-2]} cp{python}; took the newest")
                break
        else:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise DeviceError(f"no {package} wheel for device '{info.get('name')}' ({tags[-2]}, cp{python}): "
                              f"{lines[-1] if lines else 'pip download failed'}",
                              hint="that runtime has no build for this device; drop its target for this device")
    return {"requirements": chosen, "notes": notes, "platform_tags": tags, "python": python,
            "no_deps": sorted(p for p in chosen if p in no_deps)}


def setup_device(device: Any, packages: list[str], cache: Path,
                 no_deps: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Build the wheelhouse here, push it, install it into a venv on the device; what got installed (also
    written to ``<work_dir>/setup.json`` on the device)."""
    info = device.describe()
    wheelhouse = cache / f"{platform_tags(info)[-1]}-cp{''.join(info['python'].split('.')[:2])}-{info['libc']}"
    plan = build_wheelhouse(packages, info, wheelhouse, no_deps)
    wheels = {p.name: p for p in sorted(wheelhouse.glob("*.whl"))}
    remote_wheels = device.remote_path("wheelhouse")
    device.push_files(wheels, remote_wheels, f"{len(wheels)} wheels")
    requirements = plan["requirements"]
    installed = device.agent("install", device.remote_path("venv"), remote_wheels,
                             json.dumps([r for p, r in requirements.items() if p not in no_deps]),
                             json.dumps([r for p, r in requirements.items() if p in no_deps]),
                             what="pip install", timeout=3600)
    record = {**plan, **installed, "device": info["name"], "machine": info["machine"]}
    device.agent("unpack", device.remote_path(), data=tar_bytes({"setup.json": json.dumps(record, indent=2).encode()}), what="recording the setup")
    return record
