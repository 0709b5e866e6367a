"""The benchmark stage: the configured threads reach the runtime, ``benchmark.map: false`` skips mAP, and a
device that cannot run a bundle is a clear error."""

import json
from pathlib import Path

import pytest

import edgeopt
from edgeopt.config.schema import BenchmarkConfig
from edgeopt.devices.local import LocalDevice
from edgeopt.errors import DeviceError
from edgeopt.stages.benchmark import bench_artifact, map_drop_problem
from edgeopt.stages.context import Bundle
from edgeopt.core.manifest import read_manifest
from edgeopt.targets import get_target
from helpers import write_config


@pytest.fixture(scope="module")
def no_map_run(tmp_path_factory):
    """ORT fp32 at 2 threads with ``benchmark.map: false``."""
    tmp = tmp_path_factory.mktemp("bench")
    config = write_config(tmp, stages=["calibrate", "export", "benchmark"],
                          targets=[{"name": "onnxruntime", "precisions": ["fp32"]}],
                          benchmark={"warmup": 1, "runs": 50, "threads": 2, "map": False})
    return edgeopt.run(edgeopt.load_config(str(config)))


def test_threads_reach_the_bundle_runner(no_map_run):
    rows = {r["target"]: r for r in no_map_run.records}
    artifact = rows["onnxruntime"]
    assert artifact["status"] == "passed", artifact["reason"]
    assert artifact["threads"] == 2  # reported by run.py --bench, which opened the session with them
    assert artifact["session_options"]["intra_op_num_threads"] == 2
    assert rows["torch"]["threads"] == 2 and no_map_run.run_info["threads"] == 2


def test_map_false_computes_no_map(no_map_run):
    for row in no_map_run.records:
        assert row.get("map50_95") is None and row.get("map50_95_drop") is None, row
        assert row["latency_ms_median"] > 0


class DeviceWithoutTheRuntime(LocalDevice):
    """This machine, but with an ``onnxruntime`` that cannot be imported (as on a board nobody set up)."""

    def __init__(self, shadow: Path) -> None:
        super().__init__({"name": "bare-board", "kind": "local"})
        self.shadow = shadow

    def run(self, command, timeout=1800, env=None, what=None):
        return super().run(command, timeout, {**(env or {}), "PYTHONPATH": str(self.shadow)}, what)


def test_a_device_that_cannot_run_the_bundle_is_a_clear_error(no_map_run, tmp_path):
    (tmp_path / "onnxruntime.py").write_text("raise ImportError('onnxruntime is not installed on this board')\n")
    path = Path(next(r for r in no_map_run.records if r["target"] == "onnxruntime")["artifact"])
    bundle = Bundle(get_target("onnxruntime"), "fp32", path, read_manifest(path))
    with pytest.raises(DeviceError) as info:
        bench_artifact(bundle, DeviceWithoutTheRuntime(tmp_path), 1, BenchmarkConfig(runs=50, warmup=1), None,
                       tmp_path)
    message = str(info.value)
    assert "bare-board" in message and path.name in message and "not installed on this board" in message
    assert "\n" not in message and not (tmp_path / "bench.json").exists()


def test_map_drop_is_judged_in_points_per_precision():
    budget = {"fp32": 0.5, "int8": 1.0}
    assert map_drop_problem(None, "int8", budget) is None  # no mAP measured: nothing to judge
    assert map_drop_problem(0.0099, "int8", budget) is None and map_drop_problem(-0.02, "fp32", budget) is None
    assert map_drop_problem(0.0101, "int8", budget) == "mAP50-95 drop 1.01 pt > budget 1 pt (parity.max_map_drop)"
    assert map_drop_problem(0.006, "fp32", budget) and map_drop_problem(float("nan"), "fp32", budget)


def test_benchmark_profile_records_the_top_operators_and_reports_them(tmp_path):
    """``benchmark.profile: true``: each timed row carries its profile summary; report.md has the section."""
    config = write_config(tmp_path, stages=["calibrate", "export", "benchmark"],
                          targets=[{"name": "onnxruntime", "precisions": ["fp32"]}],
                          benchmark={"warmup": 1, "runs": 50, "map": False, "profile": True})
    result = edgeopt.run(edgeopt.load_config(str(config)))
    row = next(r for r in result.records if r["target"] == "onnxruntime")
    profile = row["profile"]
    assert profile["operators"] >= 10 and 0 < len(profile["top"]) <= 10
    assert profile["profiled_ms"] > 0 and profile["by_kind_ms"]["float compute"] > 0
    report = (result.output / "report.md").read_text()
    assert "## Per-operator profiles" in report and profile["top"][0]["name"] in report


def test_each_pruned_bundle_is_timed_beside_its_unpruned_twin(tmp_path):
    """With the prune stage, each pruned row says what pruning bought on its device: the same config's unpruned
    bundle (what a run without pruning exports: the same cache entry) is timed in alternation with it. The twin
    carries no pruning lineage; benchmark.unpruned_twin: false leaves it out."""
    pytest.importorskip("torch_pruning", reason="the 'prune' extra is not installed")
    common = dict(model={"source": "reference", "input_size": 96},
                  targets=[{"name": "onnxruntime", "precisions": ["fp32", "int8"]}],
                  benchmark={"warmup": 1, "runs": 50, "threads": 1, "map": False})
    cfg = write_config(tmp_path, stages=["calibrate", "quantize", "prune", "export", "benchmark"],
                       prune={"ratio": 0.5, "recovery": {"mode": "none"}}, **common)
    result = edgeopt.run(edgeopt.load_config(str(cfg)))
    rows = [r for r in result.records if r["status"] != "reference"]
    assert len(rows) == 2
    for r in rows:  # (unrecovered at 0.5, the rows may fail parity: timing them is what is tested)
        assert r["x_unpruned_rounds"] >= 5 and r["unpruned_latency_ms"] > 0
        assert r["x_unpruned_range"][0] <= r["x_unpruned"] <= r["x_unpruned_range"][1]
    bundles = [read_manifest(p) for p in (tmp_path / "run" / "cache" / "export").iterdir() if p.is_dir()]
    assert sorted("pruning" in m.lineage for m in bundles) == [False, False, True, True]  # two twins
    text = (tmp_path / "run" / "report.md").read_text()
    assert "| target | precision | device | threads | pruned ms | unpruned ms | x unpruned | rounds' range |" in text
    assert "x_unpruned" in (tmp_path / "run" / "results.csv").read_text().splitlines()[0]
    # the twins are what the same config exports unpruned: that run exports nothing new
    unpruned = write_config(tmp_path, stages=["calibrate", "quantize", "export"], **common)
    assert not [k for k in edgeopt.run(edgeopt.load_config(str(unpruned))).cache_misses if k.startswith("export")]
    off = write_config(tmp_path, stages=["calibrate", "quantize", "prune", "export", "benchmark"],
                       prune={"ratio": 0.5, "recovery": {"mode": "none"}},
                       **{**common, "benchmark": {**common["benchmark"], "unpruned_twin": False}})
    assert all("x_unpruned" not in r for r in edgeopt.run(edgeopt.load_config(str(off))).records)
