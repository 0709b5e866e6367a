"""The contract every target honours, run against each registered target whose runtime is installed:
export -> load -> run -> parity within the configured tolerance, and a bundle whose run.py works on its own."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from edgeopt.config.schema import ParityConfig
from edgeopt.core.manifest import verify_bundle
from edgeopt.data.synthetic import render_image
from edgeopt.errors import DependencyError
from edgeopt.stages.export import export_bundle
from edgeopt.core.quant import QuantPlan
from edgeopt.core.registry import TARGETS
from edgeopt.targets import default_options, get_target

SIZE = 96
# runs a script with edgeopt and torch made unimportable: a bundle must need only numpy, Pillow and its runtime
NO_EDGEOPT = ("import runpy, sys; sys.modules.update(edgeopt=None, torch=None); "
              "path = sys.argv[1]; sys.argv = sys.argv[1:]; runpy.run_path(path, run_name='__main__')")


def _available(name):
    target = get_target(name)
    try:
        target.check_available()
    except DependencyError as exc:
        return pytest.param(name, marks=pytest.mark.skip(reason=str(exc)))
    return name


CASES = [
    pytest.param(name, precision, id=f"{name}-{precision}")
    for name in TARGETS.names for precision in get_target(name).capabilities.precisions
]


@pytest.mark.parametrize("name, precision", CASES)
def test_export_load_run_parity(name, precision, tiny_detector, calib, tmp_path):
    target = get_target(name)
    try:
        target.check_available()
    except DependencyError as exc:
        pytest.skip(str(exc))
    reason = target.precision_unsupported(precision)
    if reason:  # e.g. bf16 on a CPU without it: the pipeline records the row as skipped
        pytest.skip(reason)
    manifest = export_bundle(target, tiny_detector, precision, QuantPlan(), calib, tmp_path, default_options(name), ParityConfig(),
                             {"test": True})
    assert manifest.parity["passed"], manifest.parity["problems"]
    assert manifest.parity["boxes_compared"] > 0  # boxes were actually compared
    assert verify_bundle(tmp_path) == []
    run = target.open(tmp_path, manifest.to_dict(), threads=1)
    x = calib.float_images("parity")[:1]
    out = run(x)[0]
    ref = tiny_detector.module(torch.from_numpy(x)).detach().numpy()
    assert out.shape == ref.shape
    tol = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 2e-2, "int8": 0.1}[precision]
    assert np.abs(out - ref).mean() < tol


@pytest.mark.parametrize("name", [_available(n) for n in TARGETS.names])
def test_bundle_run_py_detects_in_a_subprocess(name, tiny_detector, calib, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    export_bundle(get_target(name), tiny_detector, "fp32", QuantPlan(), calib, bundle, default_options(name), ParityConfig(), {})
    image = tmp_path / "img.jpg"
    image.write_bytes(render_image(9, "val", 0)[0])
    proc = subprocess.run([sys.executable, "-c", NO_EDGEOPT, str(bundle / "run.py"), str(image), "--json",
                           "--score", "0.3"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(proc.stdout)
    assert dets and {"class", "score", "box"} <= set(dets[0])
    w, h = Image.open(image).size
    assert all(0 <= d["box"][0] <= d["box"][2] <= w and 0 <= d["box"][1] <= d["box"][3] <= h for d in dets)
    bench = subprocess.run([sys.executable, "-c", NO_EDGEOPT, str(bundle / "run.py"), "--bench", "--runs", "50", "--warmup", "1"],
                           capture_output=True, text=True, timeout=300)
    stats = json.loads(bench.stdout)
    assert stats["runs"] == 50 and 0 < stats["latency_ms_min"] <= stats["latency_ms_median"] <= stats["latency_ms_p90"]
    assert 0 < stats["peak_rss_mb"] < 2000


@pytest.mark.parametrize("name", TARGETS.names)
def test_config_section_offers_exactly_the_targets_precisions(name):
    """A target's config section (what a YAML may ask for) and its capabilities (what it exports) agree."""
    from typing import get_args

    from edgeopt.core.registry import resolve

    section = resolve(TARGETS.entry(name).config)
    (literal,) = get_args(section.model_fields["precisions"].annotation)
    assert set(get_args(literal)) == set(get_target(name).capabilities.precisions)
