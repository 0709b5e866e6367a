"""NCNN INT8 written by edgeopt: the calibration table and the int8 ``.param/.bin``, from the ncnn model format.

No package in reach ships ncnn's ``ncnn2table``/``ncnn2int8``, so this module implements what they do:

* **table**: per quantized layer, per-output-channel weight scales ``127 / absmax`` on the (BN-folded) weights
  (``31 / absmax`` for 3x3 stride-1 convolutions, which ncnn may run with int8 Winograd F(4,3) that needs 6-bit
  weights), and one input-activation scale ``127 / threshold`` with the threshold chosen by KL divergence over a
  2048-bin histogram (ncnn's algorithm) or by the plain maximum;
* **writer**: for each quantized Convolution / ConvolutionDepthWise / InnerProduct, param ``8=int8_scale_term``
  (2, or 1 for depthwise), weights stored as int8 behind the int8 tag ``0x000D4B38``, then raw float32 bias,
  weight scales and input scale. Every other layer's bytes are copied unchanged.

Only Convolution, ConvolutionDepthWise and InnerProduct are quantized (as in ncnn); layers the plan keeps float
(the head's final convolutions) stay fp32. Requantize fusion (int8 outputs between convolutions) is not applied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ExportError
from edgeopt.targets.graph import head_tail, kept_float

MAGIC = "7767517"
TAG_FP32, TAG_FP16, TAG_INT8 = 0x00000000, 0x01306B47, 0x000D4B38
QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
# layer types that read no weights from the .bin (walking the file must know every layer's load sequence)
NO_WEIGHTS = {"Input", "Split", "Concat", "BinaryOp", "UnaryOp", "ReLU", "Sigmoid", "Softplus", "Pooling",
              "Interp", "Reshape", "Permute", "Slice", "Crop", "Flatten", "Eltwise", "Clip", "Swish", "HardSwish",
              "HardSigmoid", "Mish", "Softmax", "Padding", "Noop", "Dropout", "TanH", "Exp", "Log", "Squeeze",
              "ExpandDims", "ShuffleChannel", "PixelShuffle", "Reduction", "Tile", "Cast", "Gemm", "MatMul"}


@dataclass
class Layer:
    """One ``.param`` line: type, name, bottom/top blob names and the raw ``id=value`` tokens."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]
    buffers: list[tuple[str, bytes]] = field(default_factory=list)  # ("tagged"|"raw", payload with tag)

    def int(self, key: str, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def line(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)} " + " ".join(
            self.bottoms + self.tops) + (f" {params}" if params else "")


def parse_param(text: str) -> tuple[int, list[Layer]]:
    """(blob count, layers) of an ncnn ``.param`` text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != MAGIC:
        raise ExportError(f"not an ncnn .param file (first line {lines[0] if lines else ''!r}, expected {MAGIC})")
    n_layers, n_blobs = (int(v) for v in lines[1].split())
    layers = []
    for ln in lines[2 : 2 + n_layers]:
        tok = ln.split()
        n_in, n_out = int(tok[2]), int(tok[3])
        blobs = tok[4 : 4 + n_in + n_out]
        params = dict(t.split("=", 1) for t in tok[4 + n_in + n_out :])
        layers.append(Layer(tok[0], tok[1], blobs[:n_in], blobs[n_in:], params))
    return n_blobs, layers


def _tagged(data: bytes, pos: int, n: int) -> tuple[bytes, int]:
    tag = struct.unpack_from("<I", data, pos)[0]
    size = {TAG_FP32: n * 4, TAG_FP16: (n * 2 + 3) & ~3, TAG_INT8: (n + 3) & ~3}.get(tag)
    if size is None:
        raise ExportError(f"unsupported ncnn weight tag 0x{tag:08X} at byte {pos}")
    return data[pos : pos + 4 + size], pos + 4 + size


def read_bin(layers: list[Layer], data: bytes) -> None:
    """Split the ``.bin`` into each layer's buffers, following every layer type's load sequence."""
    pos = 0
    for layer in layers:
        t = layer.type
        if t in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
            n_weights = layer.int("6") if t != "InnerProduct" else layer.int("2")
            bias = layer.int("5") if t != "InnerProduct" else layer.int("1")
            buf, pos = _tagged(data, pos, n_weights)
            layer.buffers.append(("tagged", buf))
            if bias:
                n = layer.int("0") * 4
                layer.buffers.append(("raw", data[pos : pos + n]))
                pos += n
            term = layer.int("8")
            if term:  # an int8 layer: weight scales, input scale (and output scale when requantized)
                n_scales = layer.int("7", 1) if t == "ConvolutionDepthWise" and term % 100 == 1 else (
                    1 if t == "ConvolutionDepthWise" else layer.int("0"))
                n = (n_scales + 1 + (1 if term > 100 else 0)) * 4
                layer.buffers.append(("raw", data[pos : pos + n]))
                pos += n
        elif t == "MemoryData":
            n = max(layer.int("0"), 1) * max(layer.int("1"), 1) * max(layer.int("11"), 1) * max(layer.int("2"), 1)
            if layer.int("21", 1) != 1:
                raise ExportError(f"MemoryData {layer.name} with load_type {layer.params['21']} is not supported")
            layer.buffers.append(("raw", data[pos : pos + n * 4]))
            pos += n * 4
        elif t == "BatchNorm":
            n = layer.int("0") * 4 * 4
            layer.buffers.append(("raw", data[pos : pos + n]))
            pos += n
        elif t not in NO_WEIGHTS:
            raise ExportError(f"ncnn layer type {t} ({layer.name}) is not supported by the int8 writer")
    if pos != len(data):
        raise ExportError(f"ncnn .bin has {len(data) - pos} unread bytes: the layer walk does not match the file")


def float_weights(layer: Layer) -> np.ndarray:
    """The layer's main weights as float32 (from an fp32- or fp16-tagged buffer)."""
    buf = layer.buffers[0][1]
    tag = struct.unpack_from("<I", buf, 0)[0]
    n = layer.int("6") if layer.type != "InnerProduct" else layer.int("2")
    if tag == TAG_FP32:
        return np.frombuffer(buf, "<f4", n, 4).copy()
    if tag == TAG_FP16:
        return np.frombuffer(buf, "<f2", n, 4).astype(np.float32)
    raise ExportError(f"layer {layer.name}: weights are not float (tag 0x{tag:08X})")


def weight_scales(layer: Layer) -> np.ndarray:
    """Per output channel (per group for depthwise) ``127 / absmax``, 0 for an all-zero channel."""
    w = float_weights(layer)
    groups = layer.int("7", 1) if layer.type == "ConvolutionDepthWise" else layer.int("0")
    absmax = np.abs(w.reshape(groups, -1)).max(axis=1)
    bits = 127.0
    if (layer.type == "Convolution" and layer.int("1") == 3 and layer.int("11", layer.int("1")) == 3
            and layer.int("3", 1) == 1 and layer.int("13", layer.int("3", 1)) == 1
            and layer.int("2", 1) == 1 and layer.int("12", layer.int("2", 1)) == 1):
        bits = 31.0  # int8 Winograd F(4,3) transforms the weights; ncnn needs 6-bit weights there
    with np.errstate(divide="ignore"):
        return np.where(absmax > 0, bits / absmax, 0.0).astype(np.float32)


def kl_threshold(hist: np.ndarray, absmax: float, target_bins: int = 128) -> float:
    """ncnn's KL-divergence threshold on a 2048-bin |x| histogram (exact zeros excluded).

    For each candidate threshold bin ``t``: the clipped distribution (outliers folded into bin ``t - 1``) is
    compared with its 128-level quantization (each level's mass spread evenly over the source bins it covers,
    fractional edges included); the ``t`` with the smallest KL wins. Vectorised over source bins.
    """
    num_bins = len(hist)
    if absmax <= 0 or hist.sum() == 0:
        return max(absmax, 1e-6)
    p = hist.astype(np.float64) / hist.sum()
    cum = np.concatenate(([0.0], np.cumsum(p)))
    eps = 1e-4
    best_t, best_kl = num_bins - 1, np.inf
    for t in range(target_bins, num_bins):
        width = t / target_bins
        edges = np.arange(target_bins + 1) * width
        whole = np.floor(edges).astype(np.int64)
        mass_below = cum[whole] + (edges - whole) * np.append(p, 0.0)[whole]  # mass of p below each edge
        density = np.diff(mass_below) / width
        i = np.arange(t)
        j_lo = np.minimum((i / width).astype(np.int64), target_bins - 1)
        j_hi = np.minimum(((i + 1) / width - 1e-12).astype(np.int64), target_bins - 1)
        overlap_lo = np.minimum(i + 1, (j_lo + 1) * width) - i
        q = eps + density[j_lo] * overlap_lo + np.where(j_hi != j_lo, density[j_hi] * (i + 1 - (j_lo + 1) * width), 0)
        clip = eps + p[:t]
        clip[t - 1] += p[t:].sum()
        kl = float(np.sum(clip * np.log(clip / q)))
        if kl < best_kl:
            best_kl, best_t = kl, t
    return (best_t + 0.5) * absmax / num_bins


def activation_scales(param: Path, weights: Path, layers: list[Layer], images: np.ndarray, input_blob: str,
                      method: str = "kl") -> dict[str, float]:
    """Input-blob scale ``127 / threshold`` per layer, from fp32 ncnn inference on the calibration images."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 2
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise ExportError("ncnn could not load the fp32 model for calibration")
    blobs = sorted({layer.bottoms[0] for layer in layers})

    def each_activation():
        for img in images:
            chw = np.ascontiguousarray(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
            ex = net.create_extractor()
            ex.set_light_mode(False)  # keep intermediate blobs: we read many of them
            ex.input(input_blob, ncnn.Mat(chw).clone())  # Mat wraps the array without copying
            acts = {}
            for b in blobs:
                ret, mat = ex.extract(b)
                if ret != 0:
                    raise ExportError(f"ncnn could not extract blob {b} during calibration ({ret})")
                acts[b] = np.abs(np.array(mat, copy=True)).ravel()
            yield acts

    absmax = dict.fromkeys(blobs, 0.0)
    for acts in each_activation():
        for b, a in acts.items():
            absmax[b] = max(absmax[b], float(a.max()) if a.size else 0.0)
    thresholds = dict(absmax)
    if method == "kl":
        hists = {b: np.zeros(2048, np.int64) for b in blobs}
        for acts in each_activation():
            for b, a in acts.items():
                a = a[a != 0]
                if absmax[b] > 0 and a.size:
                    idx = np.minimum((a / absmax[b] * 2048).astype(np.int64), 2047)
                    hists[b] += np.bincount(idx, minlength=2048)
        thresholds = {b: kl_threshold(hists[b], absmax[b]) for b in blobs}
    return {layer.name: 127.0 / max(thresholds[layer.bottoms[0]], 1e-6) for layer in layers}


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.trunc(x + np.copysign(0.5, x))


def quantize_layer(layer: Layer, w_scales: np.ndarray, in_scale: float) -> None:
    """Rewrite a layer's params and buffers as ncnn int8 (weights int8, then raw bias, scales, input scale)."""
    w = float_weights(layer)
    groups = len(w_scales)
    q = np.clip(_round_half_away(w.reshape(groups, -1) * w_scales[:, None]), -127, 127).astype(np.int8).ravel()
    payload = q.tobytes() + b"\0" * ((4 - len(q) % 4) % 4)
    buffers = [("tagged", struct.pack("<I", TAG_INT8) + payload)]
    buffers += [b for b in layer.buffers[1:]]  # bias stays raw fp32
    buffers.append(("raw", w_scales.astype("<f4").tobytes()))
    buffers.append(("raw", np.asarray([in_scale], "<f4").tobytes()))
    layer.buffers = buffers
    layer.params["8"] = "1" if layer.type == "ConvolutionDepthWise" else "2"


def head_tail_layers(layers: list[Layer], outputs: list[str], depth: int = 1) -> set[str]:
    """Names of the last convolutions feeding ``outputs`` (walking back from them, stopping at convolutions)."""
    producer = {top: layer for layer in layers for top in layer.tops}
    def kernel(ly: Layer) -> tuple[int, int, int] | None:  # num_output, kernel_h (11, default kernel_w), kernel_w
        return (ly.int("0"), ly.int("11", ly.int("1")), ly.int("1")) if ly.type != "InnerProduct" else None

    convs, _ = head_tail((producer[o] for o in outputs if o in producer),
                         parents=lambda ly: [producer[b] for b in ly.bottoms if b in producer],
                         is_conv=lambda ly: ly.type in QUANTIZABLE, ident=lambda ly: ly.name, kernel=kernel,
                         depth=depth)
    return {ly.name for ly in convs}


def write_int8(param: Path, weights: Path, out_param: Path, out_weights: Path, images: np.ndarray,
               input_blob: str, outputs: list[str], plan: Any, method: str = "kl") -> dict:
    """Calibrate and write the int8 model; returns the calibration table and what was quantized.

    ``plan``: the quantization plan; its ``keep_float`` regexes (``re.search``) match ncnn layer names.
    """
    n_blobs, layers = parse_param(param.read_text())
    read_bin(layers, weights.read_bytes())
    if any(layer.int("8") for layer in layers if layer.type in QUANTIZABLE):
        raise ExportError(f"{param} is already quantized")
    kept = set(kept_float(plan, lambda depth: head_tail_layers(layers, outputs, depth),
                          (layer.name for layer in layers)))
    targets = [layer for layer in layers if layer.type in QUANTIZABLE and layer.name not in kept]
    if not targets:
        raise ExportError("no ncnn layer left to quantize")
    act = activation_scales(param, weights, targets, images, input_blob, method)
    table: dict[str, list[float]] = {}
    for layer in targets:
        scales = weight_scales(layer)
        table[f"{layer.name}_param_0"] = scales.tolist()
        table[layer.name] = [act[layer.name]]
        quantize_layer(layer, scales, act[layer.name])
    out_param.write_text("\n".join([MAGIC, f"{len(layers)} {n_blobs}"] + [layer.line() for layer in layers]) + "\n")
    out_weights.write_bytes(b"".join(buf for layer in layers for _, buf in layer.buffers))
    return {"table": table, "quantized_layers": [layer.name for layer in targets], "kept_float": sorted(kept)}


def table_text(table: dict[str, list[float]]) -> str:
    """The calibration table in ncnn2table's text format (weight rows first)."""
    rows = sorted(table.items(), key=lambda kv: (not kv[0].endswith("_param_0"), kv[0]))
    return "".join(f"{k} " + " ".join(f"{v:f}" for v in vals) + "\n" for k, vals in rows)
