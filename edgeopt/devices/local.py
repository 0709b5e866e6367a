"""The local device: the machine edgeopt runs on. Bundles are benchmarked in a fresh process via their run.py."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeopt.core.contracts import Device
from edgeopt.core.manifest import verify_bundle
from edgeopt.errors import DeviceError


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


class LocalDevice(Device):
    """Runs bundles on this machine, in a fresh process each time."""

    emulated = False

    def __init__(self, profile: dict[str, Any] | None = None, source: str = "") -> None:
        self.profile = profile or {"name": "local", "kind": "local"}
        self.name = self.profile.get("name", "local")

    def describe(self, runtimes: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
        """What makes a latency figure comparable: CPU, cores, governor, OS, Python."""
        return {"name": self.name, "kind": "local", "cpu": cpu_model(), "machine": platform.machine(),
                "cores": os.cpu_count(), "governor": governor(), "os": platform.platform(),
                "python": platform.python_version()}

    def push(self, bundle: Path) -> str:
        """Nothing to copy: the bundle is already here."""
        return str(Path(bundle).resolve())

    def verify(self, bundle: Path) -> list[str]:
        return verify_bundle(Path(bundle))

    def run(self, command: list[str], timeout: float = 1800, env: dict[str, str] | None = None,
            what: str | None = None) -> str:
        """Run ``command`` here; ``what`` names it in the error (default: the command)."""
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})},
                              timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"{what or ' '.join(command)} failed on {self.name}: {tail[0]}")
        return proc.stdout

    def bench(self, bundle: Path, threads: int, warmup: int, runs: int, profile: bool = False) -> dict[str, Any]:
        """Run ``run.py --bench`` in a new process (so peak RSS is the artifact's own) and parse its JSON."""
        cmd = [sys.executable, str(Path(self.push(bundle)) / "run.py"), "--bench", "--threads", str(threads),
               "--warmup", str(warmup), "--runs", str(runs)] + (["--profile"] if profile else [])
        out = self.run(cmd, env={"OMP_NUM_THREADS": str(threads)}, what=f"benchmark of {Path(bundle).name}")
        return json.loads(out.strip().splitlines()[-1])
