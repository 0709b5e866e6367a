"""NCNN int8: the calibration table against hand-computed scales, the writer against the ncnn format, and a
check that the written model loads in the ncnn runtime and really computes in int8."""

import struct

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.core.quant import QuantPlan
from edgeopt.targets.ncnn.int8 import (TAG_INT8, Layer, kl_threshold, parse_param, quantize_layer, read_bin,
                                       weight_scales, write_int8)

pnnx = pytest.importorskip("pnnx", reason="the 'ncnn' extra is not installed")
ncnn = pytest.importorskip("ncnn", reason="the 'ncnn' extra is not installed")


def _conv_layer(weights: np.ndarray, bias: np.ndarray, k: int, stride: int) -> Layer:
    out = weights.shape[0]
    params = {"0": str(out), "1": str(k), "11": str(k), "3": str(stride), "13": str(stride), "5": "1",
              "6": str(weights.size)}
    layer = Layer("Convolution", "conv_0", ["in0"], ["1"], params)
    layer.buffers = [("tagged", struct.pack("<I", 0) + weights.astype("<f4").tobytes()),
                     ("raw", bias.astype("<f4").tobytes())]
    return layer


def test_writer_layout_matches_the_ncnn_format():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (5, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 1, 5).astype(np.float32)
    layer = _conv_layer(w, bias, 3, 2)
    scales = weight_scales(layer)
    np.testing.assert_allclose(scales, 127 / np.abs(w.reshape(5, -1)).max(1), rtol=1e-6)  # stride 2: 8-bit
    quantize_layer(layer, scales, 50.0)
    blob = b"".join(b for _, b in layer.buffers)
    assert len(blob) == 184  # 4 tag + 135 int8 + 1 pad + 20 bias + 20 weight scales + 4 input scale
    assert struct.unpack_from("<I", blob, 0)[0] == TAG_INT8 and blob[:4] == bytes.fromhex("384B0D00")
    q = np.frombuffer(blob, np.int8, 135, 4).reshape(5, -1)
    expected = np.trunc(w.reshape(5, -1) * scales[:, None] + np.copysign(0.5, w.reshape(5, -1)))
    np.testing.assert_array_equal(q, np.clip(expected, -127, 127))
    assert np.abs(q).max(1).tolist() == [127] * 5  # each channel's absmax maps to 127
    assert blob[139] == 0
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", 5, 140), bias)
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", 5, 160), scales)
    assert np.frombuffer(blob, "<f4", 1, 180)[0] == 50.0
    assert layer.params["8"] == "2"


def test_winograd_convs_get_six_bit_weight_scales():
    w = np.arange(2 * 2 * 9, dtype=np.float32).reshape(2, 2, 3, 3) - 10
    layer = _conv_layer(w, np.zeros(2, np.float32), 3, 1)
    np.testing.assert_allclose(weight_scales(layer), 31 / np.abs(w.reshape(2, -1)).max(1), rtol=1e-6)
    w[1] = 0
    layer = _conv_layer(w, np.zeros(2, np.float32), 3, 2)
    assert weight_scales(layer)[1] == 0.0  # an all-zero channel gets scale 0 (ncnn outputs the bias)


def test_kl_threshold_clips_outliers_and_keeps_a_uniform_range():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(0, 1, 200_000)
    h = np.bincount(np.minimum((uniform / uniform.max() * 2048).astype(int), 2047), minlength=2048)
    assert kl_threshold(h, uniform.max()) > 0.95 * uniform.max()  # nothing to clip
    heavy = np.abs(np.concatenate([rng.normal(0, 1, 200_000), [60.0]]))
    h = np.bincount(np.minimum((heavy / heavy.max() * 2048).astype(int), 2047), minlength=2048)
    assert 2.5 < kl_threshold(h, heavy.max()) < 12  # one outlier at 60 sigma is clipped away


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)
        self.c, self.out = nn.Conv2d(32, 32, 1), nn.Conv2d(32, 10, 1)

    def trunk(self, x, n):
        for conv in [self.a, self.b, self.c][:n]:
            x = torch.relu(conv(x))
        return x

    def forward(self, x):
        return self.out(self.trunk(x, 3))


@pytest.fixture(scope="module")
def tiny_ncnn(tmp_path_factory):
    torch.manual_seed(0)
    model = Tiny().eval()
    d = tmp_path_factory.mktemp("ncnn")
    pnnx.export(model, str(d / "m.pt"), inputs=torch.rand(1, 3, 32, 32), fp16=False)
    images = (np.random.default_rng(1).random((8, 32, 32, 3)) * 255).astype(np.uint8)
    return model, d, images


def test_table_matches_hand_computed_scales(tiny_ncnn):
    model, d, images = tiny_ncnn
    result = write_int8(d / "m.ncnn.param", d / "m.ncnn.bin", d / "q.param", d / "q.bin", images, "in0", ["out0"],
                        QuantPlan(), method="max")
    table = result["table"]
    convs = [model.a, model.b, model.c]
    names = sorted(k for k in table if not k.endswith("_param_0"))
    assert len(names) == 3 and len(result["kept_float"]) == 1  # the output conv stays float
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    inputs = [x, model.trunk(x, 1), model.trunk(x, 2)]
    for name, conv, inp in zip(names, convs, inputs):
        absmax = conv.weight.detach().abs().flatten(1).max(1).values.numpy()
        np.testing.assert_allclose(table[f"{name}_param_0"], 127 / absmax, rtol=1e-5)
        np.testing.assert_allclose(table[name][0], 127 / inp.abs().max().item(), rtol=1e-4)


def test_int8_model_loads_and_runs_in_int8(tiny_ncnn):
    model, d, images = tiny_ncnn
    write_int8(d / "m.ncnn.param", d / "m.ncnn.bin", d / "q.param", d / "q.bin", images, "in0", ["out0"], QuantPlan())
    _, layers = parse_param((d / "q.param").read_text())
    read_bin(layers, (d / "q.bin").read_bytes())  # the file walks cleanly with the int8 layout
    quantized = [ly for ly in layers if ly.params.get("8") == "2"]
    assert len(quantized) == 3
    assert all(struct.unpack_from("<I", ly.buffers[0][1])[0] == TAG_INT8 for ly in quantized)
    assert (d / "q.bin").stat().st_size < 0.45 * (d / "m.ncnn.bin").stat().st_size
    x = np.ascontiguousarray(images[0].transpose(2, 0, 1).astype(np.float32) / 255.0)
    ref = model(torch.from_numpy(x)[None])[0].detach().numpy()
    outs = {}
    for tag in ("m.ncnn", "q"):
        net = ncnn.Net()
        assert net.load_param(str(d / f"{tag}.param")) == 0 and net.load_model(str(d / f"{tag}.bin")) == 0
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(x).clone())
        outs[tag] = np.array(ex.extract("out0")[1], copy=True)
    np.testing.assert_allclose(outs["m.ncnn"], ref, atol=1e-4)
    err = np.abs(outs["q"] - ref)
    assert 1e-4 < err.max() < 0.1 * np.abs(ref).max()  # quantization error: int8 math, not fp32 math
    cos = (outs["q"] * ref).sum() / np.linalg.norm(outs["q"]) / np.linalg.norm(ref)
    assert cos > 0.995


def test_keep_float_patterns_keep_layers_float(tiny_ncnn):
    model, d, images = tiny_ncnn
    _, layers = parse_param((d / "m.ncnn.param").read_text())
    first = next(ly.name for ly in layers if ly.type == "Convolution")
    result = write_int8(d / "m.ncnn.param", d / "m.ncnn.bin", d / "k.param", d / "k.bin", images, "in0", ["out0"],
                        QuantPlan(keep_float=[f"^{first}$"]))
    assert first in result["kept_float"] and first not in result["quantized_layers"]
    assert len(result["quantized_layers"]) == 2
    _, written = parse_param((d / "k.param").read_text())
    assert next(ly for ly in written if ly.name == first).params.get("8") is None  # stays fp32
