"""The whole device flow on the emulated arm64 Raspberry Pi (scripts/emulated_pi.py): start it, `edgeopt device
setup` (arm64 wheels built here, installed there offline), `edgeopt device check`, then `edgeopt run` with the
default config's targets benchmarked on it, mAP measured from detections made by the arm64 runtimes.

Slow (the root filesystem is built once, ~5 min, then cached; emulated inference is ~10-50x slower): run with
``bash scripts/test.sh -m slow tests/devices/test_emulated_pi.py``. Needs root and Debian's qemu-user-static,
binfmt-support, debootstrap and openssh-server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-aarch64-static")
                                 or not shutil.which("debootstrap"),
                                 reason="needs root, qemu-user-static and debootstrap")]


@pytest.fixture(scope="module")
def emulated_pi():
    """The emulated Pi's device profile (started for this module, stopped after)."""
    script = [sys.executable, str(ROOT / "scripts" / "emulated_pi.py")]
    started = subprocess.run([*script, "start"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    profile = Path(started.stdout.strip().splitlines()[-1])
    yield profile
    subprocess.run([*script, "stop"], capture_output=True)


def _edgeopt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EDGEOPT, *args], capture_output=True, text=True, cwd=ROOT)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def test_setup_and_check_find_arm64_runtimes(emulated_pi):
    _edgeopt("device", "setup", str(emulated_pi))
    info = json.loads(_edgeopt("device", "check", str(emulated_pi), "--json").stdout)
    assert info["machine"] == "aarch64" and info["emulated"] is True and info["cpu"] == "Cortex-A76"
    assert "asimddp" in info["cpu_flags"] and info["libc"] == "glibc-2.36"
    for target in ("onnxruntime", "tflite", "ncnn", "openvino"):
        assert info["runtimes"][target]["ok"], info["runtimes"][target]


@pytest.mark.timeout(7200)  # ~45 min of emulated inference; pytest's default (900 s) would cut it off
def test_the_default_targets_pass_on_arm64_with_map_measured_there(emulated_pi, tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    config["output"] = str(tmp_path / "run")
    # emulated inference at mAP settings takes seconds per image (100 images: >7 min for one bundle)
    config["data"]["validation"]["images"] = 20
    config["benchmark"].update(runs=50, warmup=2, map_on_device=True)
    for target in config["targets"]:  # every target, fp32 and int8 (fp16/bf16 add emulated time, no new path)
        target["precisions"] = [p for p in target["precisions"] if p in ("fp32", "int8")]
    config["device"] = str(emulated_pi)
    path = tmp_path / "pi.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _edgeopt("run", str(path), check=False)
    records = json.loads((tmp_path / "run" / "results.json").read_text())["records"]
    rows = [r for r in records if r["status"] != "reference"]
    assert rows and proc.returncode in (0, 1)
    budget = config.get("parity", {}).get("max_map_drop") or {"fp32": 0.5, "fp16": 0.5, "bf16": 0.5, "int8": 2.0}
    for row in rows:
        if row["status"] == "skipped":
            assert row["reason"], row  # e.g. bf16 on a CPU without it: skipped with the reason
            continue
        assert row["device"] == "emulated-pi" and row["emulated"] is True, row
        assert row["status"] == "passed", (row["target"], row["precision"], row["reason"])
        # the arm64 kernels' detections score as the x86 ones do, within the precision's mAP budget, and match
        # them box for box within the parity tolerance (else the row would have failed with that reason)
        assert abs(row["device_map50_95"] - row["host_map50_95"]) * 100 <= budget[row["precision"]], row
        assert row["device_box_agreement"] >= {"fp32": 0.98, "int8": 0.75}[row["precision"]], row
    assert proc.returncode == 0, proc.stderr[-2000:]
