"""The contract every target honours, run against each registered target whose runtime is installed:
export -> load -> run -> parity within the configured tolerance, a bundle whose run.py works on its own and
detects what the model detects, and a parity gate that refuses a broken artifact."""

import copy
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from edgeopt.bundle.decode import decode
from edgeopt.bundle.letterbox import letterbox_image
from edgeopt.config.schema import ParityConfig
from edgeopt.core.manifest import verify_bundle
from edgeopt.core.quant import QuantPlan
from edgeopt.core.registry import TARGETS
from edgeopt.data.synthetic import render_image
from edgeopt.errors import DependencyError
from edgeopt.eval.parity import parity
from edgeopt.stages.export import export_bundle, parity_gate
from edgeopt.stages.reference import reference_infer
from edgeopt.targets import default_options, get_target

SIZE = 96
# runs a script with edgeopt and torch made unimportable: a bundle must need only numpy, Pillow and its runtime
NO_EDGEOPT = ("import runpy, sys; sys.modules.update(edgeopt=None{}); "
              "path = sys.argv[1]; sys.argv = sys.argv[1:]; runpy.run_path(path, run_name='__main__')")


def isolated(name: str) -> str:
    """Python code running a bundle's run.py with edgeopt (and torch, unless the runtime needs it) unimportable."""
    return NO_EDGEOPT.format("" if "torch" in get_target(name).device_packages else ", torch=None")


def _available(name):
    target = get_target(name)
    try:
        target.check_available()
    except DependencyError as exc:
        return pytest.param(name, marks=pytest.mark.skip(reason=str(exc)))
    return name


AVAILABLE = [_available(n) for n in TARGETS.names]
CASES = [
    pytest.param(name, precision, id=f"{name}-{precision}")
    for name in TARGETS.names for precision in get_target(name).capabilities.precisions
]


# with this many detections compared, one lost box moves bf16's box agreement by 2% at most (limit 0.9)
BF16_MIN_BOXES = 50


@pytest.mark.parametrize("name, precision", CASES)
def test_export_load_run_parity(name, precision, contract_detector, calib, tmp_path, request):
    target = get_target(name)
    try:
        target.check_available()
    except DependencyError as exc:
        pytest.skip(str(exc))
    reason = target.precision_unsupported(precision)
    if reason:  # e.g. bf16 on a CPU without it: the pipeline records the row as skipped
        pytest.skip(reason)
    if precision == "bf16":
        calib = request.getfixturevalue("bf16_calib")
    manifest = export_bundle(target, contract_detector, precision, QuantPlan(), calib, tmp_path, default_options(name),
                             ParityConfig(), {"test": True})
    assert manifest.parity["verdict"] == "passed", manifest.parity["problems"]
    assert manifest.parity["boxes_compared"] >= ParityConfig().min_boxes  # real detections were compared
    if precision == "bf16":
        assert manifest.parity["boxes_compared"] >= BF16_MIN_BOXES
    assert verify_bundle(tmp_path) == []
    run = target.open(tmp_path, manifest.to_dict(), threads=1)
    x = calib.float_images("parity")[:1]
    out = run(x)[0]
    ref = contract_detector.model(torch.from_numpy(x)).detach().numpy()
    assert out.shape == ref.shape
    tol = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 2e-2, "int8": 0.1}[precision]
    assert np.abs(out - ref).mean() < tol


def test_bf16_rounding_stays_within_the_bf16_tolerance(contract_detector, bf16_calib):
    """What a bf16 artifact does to this detector, measured on any CPU: the model run in torch's bfloat16 (bf16
    weights and activations, like OpenVINO's bf16 inference on a CPU with AVX512-BF16) passes the bf16 gate, over
    enough detections that one box lost at the threshold cannot decide it (measured: 81 compared, agreement 1.0,
    score error 0.035 against 0.05)."""
    bf16 = copy.deepcopy(contract_detector.model).to(torch.bfloat16)
    figures = parity(reference_infer(contract_detector),
                     lambda x: bf16(torch.from_numpy(x).to(torch.bfloat16)).float().detach().numpy(),
                     bf16_calib.float_images("parity"), SIZE)
    verdict = parity_gate(figures, "bf16", ParityConfig())
    assert verdict["verdict"] == "passed", verdict["problems"]
    assert figures["boxes_compared"] >= BF16_MIN_BOXES, figures


# ExecuTorch's export takes minutes here: its run.py is checked with -m slow (and by the profile tests)
@pytest.mark.parametrize("name", [pytest.param(getattr(n, "values", [n])[0],
                                               marks=[*getattr(n, "marks", ()), pytest.mark.slow])
                                  if "executorch" in str(n) else n for n in AVAILABLE])
def test_bundle_run_py_detects_what_the_model_detects(name, contract_detector, calib, tmp_path):
    """run.py on its own (no edgeopt, no torch) finds the torch model's detections of the same image."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    export_bundle(get_target(name), contract_detector, "fp32", QuantPlan(), calib, bundle, default_options(name),
                  ParityConfig(), {})
    image = tmp_path / "img.jpg"
    image.write_bytes(render_image(9, "val", 0)[0])
    proc = subprocess.run([sys.executable, "-c", isolated(name), str(bundle / "run.py"), str(image), "--json",
                           "--score", "0.3"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    expected = _torch_detections(contract_detector, image, 0.3)
    assert expected, "the test image must hold detections"
    _assert_same_detections(found, expected)
    bench = subprocess.run([sys.executable, "-c", isolated(name), str(bundle / "run.py"), "--bench", "--runs", "50",
                            "--warmup", "1"], capture_output=True, text=True, timeout=300)
    stats = json.loads(bench.stdout)
    assert stats["runs"] == 50 and 0 < stats["latency_ms_min"] <= stats["latency_ms_median"] <= stats["latency_ms_p90"]
    assert 0 < stats["peak_rss_mb"] < 2000


def _torch_detections(detector, image_path, score: float) -> list[dict]:
    """The torch model's detections of an image in original pixels, found without the bundle's code path."""
    with Image.open(image_path) as im:
        hwc, lb = letterbox_image(im, SIZE)
    x = torch.from_numpy(hwc.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    out = detector.model(x).detach().numpy()
    det = decode(out, SIZE, replace(detector.decoder, score_threshold=score))
    return [{"class_id": int(c), "score": float(s), "box": b.tolist()}
            for b, s, c in zip(lb.to_original(det.boxes), det.scores, det.classes)]


def _assert_same_detections(found: list[dict], expected: list[dict], margin: float = 0.01) -> None:
    """Every detection clear of the threshold (by ``margin``) on one side is on the other: same class, score
    within 2e-3, box within 1 px (run.py rounds scores to 1e-4 and boxes to 0.1 px)."""
    def clear(dets):
        return [d for d in dets if d["score"] >= 0.3 + margin]

    for a_list, b_list in ((clear(expected), found), (clear(found), expected)):
        for a in a_list:
            assert any(b["class_id"] == a["class_id"] and abs(b["score"] - a["score"]) < 2e-3
                       and np.abs(np.subtract(b["box"], a["box"])).max() < 1.0 for b in b_list), (a, b_list)


# what a broken converter or runtime could do to an artifact; each must fail the gate at every precision's defaults
CORRUPTIONS = {
    "zeroed-scores": lambda y: torch.cat((y[:, :4], y[:, 4:] * 0.0), 1),
    "shifted-boxes": lambda y: torch.cat((y[:, :1] + 0.06, y[:, 1:]), 1),  # 6% of the input, over int8's 5%
    "swapped-classes": lambda y: torch.cat((y[:, :4], y[:, 4:].roll(1, dims=1)), 1),
}


class Broken(torch.nn.Module):
    """A detector whose output is corrupted inside the exported graph."""

    def __init__(self, model: torch.nn.Module, corruption: str):
        super().__init__()
        self.model, self.corruption = model, corruption

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return CORRUPTIONS[self.corruption](self.model(x))


def _slow_corruption(name: str, corruption: str) -> bool:
    """ExecuTorch's export takes minutes here: its corruptions run with -m slow; TFLite's takes a minute or more:
    its subtlest corruption (shifted boxes) runs by default, the other two with -m slow."""
    return name == "executorch" or (name == "tflite" and corruption != "shifted-boxes")


BROKEN_CASES = [pytest.param(name, corruption, id=f"{getattr(name, 'values', [name])[0]}-{corruption}",
                             marks=[*getattr(name, "marks", ()),
                                    *([pytest.mark.slow] if _slow_corruption(getattr(name, "values", [name])[0],
                                                                              corruption) else [])])
                for name in AVAILABLE for corruption in CORRUPTIONS]


@pytest.mark.parametrize("name, corruption", BROKEN_CASES)
def test_a_broken_artifact_fails_the_gate(name, corruption, contract_detector, calib, tmp_path):
    target = get_target(name)
    broken = replace(contract_detector, model=Broken(contract_detector.model, corruption).eval())
    manifest = export_bundle(target, broken, "fp32", QuantPlan(), calib, tmp_path, default_options(name),
                             ParityConfig(), {})
    session = target.open(tmp_path, manifest.to_dict(), threads=1)
    figures = parity(reference_infer(contract_detector), lambda x: session(x)[0], calib.float_images("parity"), SIZE)
    for precision in target.capabilities.precisions:  # int8's tolerance is the loosest
        verdict = parity_gate(figures, precision, ParityConfig())
        assert verdict["verdict"] == "failed", (precision, figures)


@pytest.mark.parametrize("name", TARGETS.names)
def test_config_section_offers_exactly_the_targets_precisions(name):
    """A target's config section (what a YAML may ask for) and its capabilities (what it exports) agree."""
    from typing import get_args

    from edgeopt.core.registry import resolve

    section = resolve(TARGETS.entry(name).config)
    (literal,) = get_args(section.model_fields["precisions"].annotation)
    assert set(get_args(literal)) == set(get_target(name).capabilities.precisions)
