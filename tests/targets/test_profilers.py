"""Per-operator profiles from each runtime's own profiler, through a bundle's ``run.py --bench --profile``: the
table names the operators of the exported model, with the precision they ran in, and the CLI prints it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt.config.schema import ParityConfig
from edgeopt.core.quant import QuantPlan
from edgeopt.devices.local import LocalDevice
from edgeopt.errors import DependencyError
from edgeopt.report.profile import Profile
from edgeopt.stages.export import export_bundle
from edgeopt.targets import default_options, get_target

# the runtimes with a per-operator profiler; ExecuTorch's export takes minutes here (run with -m slow)
PROFILED = ["onnxruntime", "openvino", "ncnn", "tflite", pytest.param("executorch", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def bundles(contract_detector, calib, tmp_path_factory):
    """``bundle(name, precision)``: that target's bundle of the contract detector, exported once per module."""
    made: dict[tuple[str, str], Path] = {}

    def bundle(name: str, precision: str) -> Path:
        if (name, precision) not in made:
            target = get_target(name)
            try:
                target.check_available()
            except DependencyError as exc:
                pytest.skip(str(exc))
            out = tmp_path_factory.mktemp(f"{name}-{precision}")
            manifest = export_bundle(target, contract_detector, precision, QuantPlan(), calib, out,
                                     default_options(name), ParityConfig(), {})
            assert manifest.parity["verdict"] == "passed", manifest.parity["problems"]
            made[name, precision] = out
        return made[name, precision]

    return bundle


def _ncnn_layers(bundle: Path) -> set[str]:
    lines = next(bundle.glob("*.param")).read_text().splitlines()[2:]
    return {line.split()[1] for line in lines if line.split() and line.split()[0] != "Input"}


@pytest.mark.parametrize("name", PROFILED)
def test_int8_profile_names_the_models_operators_and_their_precision(name, bundles):
    bundle = bundles(name, "int8")
    files = sorted(bundle.rglob("*"))
    figures = LocalDevice().bench(bundle, threads=1, warmup=2, runs=5, profile=True)
    assert sorted(bundle.rglob("*")) == files  # the profiler's traces never land in the (checksummed) bundle
    assert "ops" in figures["profile"], figures["profile"]
    profile = Profile.from_figures(name, figures)
    assert len(profile.ops) >= 10
    for op in profile.ops:
        assert set(op) == {"name", "type", "precision", "ms", "calls"}, op
        assert op["ms"] >= 0 and op["calls"] >= 1 and op["name"] and op["type"]
    assert profile.profiled_ms > 0 and figures["latency_ms_median"] > 0
    assert len({op["name"] for op in profile.ops}) == len(profile.ops)  # one row per operator
    assert sum(profile.share(op) for op in profile.ops) == pytest.approx(1.0)
    assert any("conv" in op["type"].lower() and op["precision"] == "int8" for op in profile.ops), profile.ops
    if name == "ncnn":  # every layer of the .param, timed on its own
        assert {op["name"].split(" [")[0] for op in profile.ops} == _ncnn_layers(bundle)


def test_tflite_profile_has_xnnpacks_operators_one_by_one(bundles):
    """LiteRT's Python API has no profiler; its C API (through ctypes) times each operator XNNPACK runs."""
    bundle = bundles("tflite", "int8")
    profile = Profile.from_figures("tflite", LocalDevice().bench(bundle, threads=1, warmup=1, runs=3, profile=True))
    delegated = [op for op in profile.ops if op["name"].startswith("XNNPACK partition")]
    assert len(delegated) >= 10 and "int8" in {op["precision"] for op in delegated}, delegated
    assert len({op["name"] for op in profile.ops}) == len(profile.ops)


def test_cli_compares_fp32_and_int8_of_one_target(bundles):
    fp32, int8 = bundles("onnxruntime", "fp32"), bundles("onnxruntime", "int8")
    args = [sys.executable, "-m", "edgeopt.cli", "profile", str(fp32), str(int8), "--runs", "5", "--warmup", "1"]
    shown = subprocess.run(args + ["--top", "3"], capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr
    assert "onnxruntime int8 vs onnxruntime fp32" in shown.stdout and "quantize / layout" in shown.stdout
    as_json = subprocess.run(args + ["--json", "--top", "4"], capture_output=True, text=True, timeout=600)
    fp32_summary, int8_summary = json.loads(as_json.stdout)
    assert len(int8_summary["top"]) == 4 and int8_summary["by_kind_ms"]["int8 compute"] > 0
    assert fp32_summary["by_kind_ms"]["int8 compute"] == 0 and fp32_summary["coverage"] > 0


def test_cli_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeopt.cli", "profile", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "is not a bundle" in proc.stderr and "Traceback" not in proc.stderr
