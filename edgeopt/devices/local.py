"""The local device: the machine edgeopt runs on. Bundles are benchmarked in a fresh process via their run.py."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

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


class LocalDevice:
    """Runs bundles on this machine."""

    def __init__(self, profile: dict[str, Any] | None = None) -> None:
        self.profile = profile or {"name": "local", "kind": "local"}
        self.name = self.profile.get("name", "local")

    def describe(self) -> dict[str, Any]:
        """What makes a latency figure comparable: CPU, cores, governor, OS, Python."""
        return {"name": self.name, "kind": "local", "cpu": cpu_model(), "machine": platform.machine(),
                "cores": os.cpu_count(), "governor": governor(), "os": platform.platform(),
                "python": platform.python_version()}

    def bench(self, bundle: Path, threads: int, warmup: int, runs: int) -> dict[str, Any]:
        """Run ``run.py --bench`` in a new process (so peak RSS is the artifact's own) and parse its JSON."""
        cmd = [sys.executable, str(Path(bundle) / "run.py"), "--bench", "--threads", str(threads),
               "--warmup", str(warmup), "--runs", str(runs)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"benchmark of {bundle.name} failed on {self.name}: {tail[0]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
