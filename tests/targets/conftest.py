"""Fixtures shared by the target tests: a tiny in-code detector and calibration images."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from edgeopt.bundle.letterbox import letterbox_image
from edgeopt.data.synthetic import CLASS_NAMES, render_image
from edgeopt.bundle.decode import DecoderConfig
from edgeopt.models.detector import Detector
from edgeopt.models.sources.reference.checkpoint import load_detector
from edgeopt.models.sources.reference.network import ReferenceConfig, build_reference
from edgeopt.core.quant import CalibrationSet

SIZE = 96


@pytest.fixture(scope="module")
def tiny_detector():
    """A tiny reference-architecture detector with scores near 0.5, so decoded boxes exist to compare."""
    torch.manual_seed(0)
    cfg = ReferenceConfig(num_classes=len(CLASS_NAMES), input_size=SIZE, widths=(8, 16, 16, 32, 32),
                          depths=(1, 1, 1, 1), neck=(16, 16, 32), head=16, class_names=CLASS_NAMES)
    model = build_reference(cfg)
    for head in model.heads:
        torch.nn.init.normal_(head.cls[-1].bias, 0.0, 0.5)
    # a few training-mode passes give BatchNorm realistic statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, SIZE, SIZE))
    model.eval()
    return Detector(model, "torch", SIZE, list(CLASS_NAMES), DecoderConfig(), source="tiny", key="tiny")


@pytest.fixture(scope="module")
def contract_detector():
    """The embedded reference detector at the test size: trained, so its detections are distinct objects with
    clear winners after NMS (a random detector scores every anchor alike, and which of hundreds of near-tied boxes
    survives NMS is then noise: a bf16 rounding alone moved its box agreement to 0.835)."""
    module = load_detector().eval()
    return Detector(module, "torch", SIZE, list(CLASS_NAMES), DecoderConfig(), source="reference", key="reference")


def _calibration_set(calibration: int, parity: int, directory) -> CalibrationSet:
    """Letterboxed synthetic validation images: the first ``calibration`` calibrate, the next ``parity`` are
    held out for parity."""
    imgs = []
    for i in range(calibration + parity):
        jpeg = render_image(5, "val", i)[0]
        imgs.append(letterbox_image(Image.open(io.BytesIO(jpeg)), SIZE)[0])
    arr = np.stack(imgs)
    return CalibrationSet(arr[:calibration], arr[calibration:], {}, directory)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return _calibration_set(16, 4, tmp_path_factory.mktemp("calib"))


@pytest.fixture(scope="module")
def bf16_calib(tmp_path_factory):
    """32 parity images (~80 detections compared, against ~10 on ``calib``'s 4): bf16 rounding moves scores that
    sit near the threshold, and over 10 boxes a single lost one already lands on the 0.9 agreement limit."""
    return _calibration_set(16, 32, tmp_path_factory.mktemp("calib-bf16"))
