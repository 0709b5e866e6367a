"""The calibrate and benchmark cache keys see the code behind their figures (issue 21): editing the letterbox,
the prediction loop or the mAP code changes exactly the keys whose output that code shapes, and editing code
outside their reach changes none. Same approach as test_export_key.py: a copy of the package is edited, and
the stages' own ``key`` functions fingerprint that copy."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeopt.config.load import load_config
from edgeopt.core import contracts
from edgeopt.core.fingerprint import code_fingerprint
from edgeopt.devices.local import LocalDevice
from edgeopt.stages.benchmark import Accuracy, BenchmarkStage, Timing
from edgeopt.stages.calibrate import CalibrateStage
from helpers import write_config

PACKAGE = Path(__file__).resolve().parents[2] / "edgeopt"
ALL = {"calibrate", "reference", "accuracy", "artifact"}
BENCHMARK = {"reference", "accuracy", "artifact"}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the package that every stage's code fingerprint reads instead of the real one."""
    shutil.copytree(PACKAGE, tmp_path / "edgeopt", ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    monkeypatch.setattr(contracts, "code_fingerprint", lambda roots: code_fingerprint(roots, root=tmp_path))
    return tmp_path


@pytest.fixture
def ctx(tmp_path):
    """What the two stages' keys read from a run: everything but the code held fixed."""
    config = load_config(write_config(tmp_path, stages=["calibrate", "export", "benchmark"]))
    model = SimpleNamespace(key="model-key")
    return SimpleNamespace(config=config, detector=model, original=model, data_key="data-key", devices=[LocalDevice()],
                           device_infos={"local": {"name": "local"}}, host_info={"name": "local"},
                           versions={"torch": "2.x"})


def keys(ctx) -> dict[str, str]:
    """The calibrate key, the reference row's, one bundle's mAP and its timing keys (new stages: code is read
    once per stage instance)."""
    bundle = SimpleNamespace(path=Path("cache/export/0123456789abcdef"), target=SimpleNamespace(name="onnxruntime"))
    return {"calibrate": CalibrateStage().key(ctx, None), "reference": BenchmarkStage().key(ctx, None),
            "accuracy": BenchmarkStage().key(ctx, Accuracy(bundle)),
            "artifact": BenchmarkStage().key(ctx, Timing(bundle, ctx.devices[0], 1))}


def _touch(root: Path, relative: str) -> None:
    path = root / "edgeopt" / relative
    path.write_text(path.read_text() + "\n# edited\n")


@pytest.mark.parametrize("relative, changed", [
    ("bundle/letterbox.py", ALL),  # calibration images, and every image the benchmark scores
    ("data/dataset.py", ALL),  # how images are read
    ("eval/predict.py", BENCHMARK),  # the prediction loop behind mAP
    ("eval/coco_map.py", BENCHMARK),  # the mAP itself
    ("bundle/decode.py", ALL),  # detections from outputs; calibrate's through the Detector's decoder config
    ("stages/calibrate.py", {"calibrate"}),
    ("stages/benchmark.py", BENCHMARK),
])
def test_editing_code_changes_exactly_the_keys_it_reaches(tree, ctx, relative, changed):
    before = keys(ctx)
    _touch(tree, relative)
    after = keys(ctx)
    assert {name for name in before if after[name] != before[name]} == changed


def test_code_outside_their_reach_leaves_the_keys(tree, ctx):
    before = keys(ctx)
    for relative in ("cli.py", "report/results.py", "pipeline.py", "stages/export.py", "stages/prune.py",
                     "training/train.py"):
        _touch(tree, relative)
    assert keys(ctx) == before
