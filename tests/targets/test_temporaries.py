"""Converters keep their temporaries inside the export's own directory (issue 14, item 9): that directory is
the cache entry's per-process temporary, which the next run removes if this one was killed, so a ``kill -9``
mid-export leaves nothing in the system's temp directory. Run for every target whose runtime is installed."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeopt.config.schema import ParityConfig
from edgeopt.core.quant import QuantPlan
from edgeopt.core.registry import TARGETS
from edgeopt.errors import DependencyError
from edgeopt.stages.export import export_bundle
from edgeopt.targets import default_options, get_target
from helpers import write_config

ROOT = Path(__file__).resolve().parents[2]


# ONNX Runtime writes one small file of a fixed name there when imported (a session id, rewritten by every
# import): not a temporary, and not something a kill can multiply
NOT_TEMPORARIES = {".ses"}


@pytest.fixture
def system_tmp(tmp_path, monkeypatch):
    """A fresh directory as the system temp dir (TMPDIR for converters run as processes, ``tempfile.tempdir``
    for those in this process), and every entry seen in it, polled while the test runs (a temporary that
    lives through a conversion is what a kill would leave behind)."""
    fresh = tmp_path / "system-tmp"
    fresh.mkdir()
    monkeypatch.setenv("TMPDIR", str(fresh))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for root, dirs, files in os.walk(fresh):
                seen.update(str(Path(root, name).relative_to(fresh)) for name in dirs + files
                            if name not in NOT_TEMPORARIES)
            stop.wait(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield seen
    stop.set()
    watcher.join()


def _installed(name: str):
    target = get_target(name)
    try:
        target.check_available()
    except DependencyError as exc:
        pytest.skip(str(exc))
    return target


@pytest.fixture
def made_by_edgeopt(monkeypatch) -> list[Path]:
    """The folders edgeopt's own code asks ``tempfile`` for (directly or through TemporaryDirectory)."""
    made: list[Path] = []
    original = tempfile.mkdtemp

    def recorded(*args, **kwargs):
        path = original(*args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") == "tempfile":
            frame = frame.f_back
        if frame is not None and frame.f_globals.get("__name__", "").startswith("edgeopt."):
            made.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    return made


# ExecuTorch's exports take minutes each here: its cases run with -m slow (its parity contract runs by default)
SLOW_EXPORTS = [pytest.param(n, marks=pytest.mark.slow) if n == "executorch" else n for n in TARGETS.names]


# folders edgeopt's code makes in an int8 export (measured; all inside the export's folder, all gone after): the
# converters' output capture, plus each converter's working folder(s)
MADE_FOR_INT8 = {"onnxruntime": 1, "openvino": 2, "tflite": 2, "ncnn": 3, "executorch": 1}


@pytest.mark.parametrize("name", SLOW_EXPORTS)
def test_an_export_keeps_its_temporaries_in_its_own_folder(name, tiny_detector, calib, tmp_path, system_tmp,
                                                           made_by_edgeopt):
    """Through the export stage's path at int8 (every converter path): the folders edgeopt makes for converters
    are in the export's folder and gone once it returns (they are no part of the bundle), and the converters' and
    quantizers' own temporaries (ONNX Runtime's augmented graph, pnnx's files) are kept there too: nothing in the
    system temp dir."""
    target = _installed(name)
    out = tmp_path / "export"
    out.mkdir()
    export_bundle(target, tiny_detector, "int8", QuantPlan(), calib, out, default_options(name), ParityConfig(),
                  {"test": True})
    assert all(out in p.parents for p in made_by_edgeopt), [str(p) for p in made_by_edgeopt]
    assert len(made_by_edgeopt) == MADE_FOR_INT8[name]
    assert not [p for p in made_by_edgeopt if p.exists()]
    assert sorted(system_tmp) == [], f"{name} wrote to the system temp dir during export: {sorted(system_tmp)}"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # its scratch folder is gone too


def test_a_run_killed_mid_quantization_leaves_nothing_in_the_system_temp_dir(tmp_path):
    """``kill -9`` while ONNX Runtime's quantizer holds its augmented graph in a temporary folder: the folder was
    inside the export's cache temporary, so the system temp dir stays empty."""
    _installed("onnxruntime")
    fresh = tmp_path / "system-tmp"
    fresh.mkdir()
    cfg = write_config(tmp_path, stages=["calibrate", "quantize", "export"],
                       targets=[{"name": "onnxruntime", "precisions": ["int8"]}])
    run = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", str(cfg)], cwd=ROOT,
                           env={**os.environ, "TMPDIR": str(fresh)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not [*fresh.rglob("ort.quant.*"), *tmp_path.glob("run/cache/export/*/*/ort.quant.*")]:
            assert run.poll() is None, "the export ended before its quantizer made a temporary folder"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    assert sorted(p.name for p in fresh.iterdir() if p.name not in NOT_TEMPORARIES) == []
