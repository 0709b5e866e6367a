"""benchmark: latency and memory on the device, mAP on the validation set through the runtime itself."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config.schema import BenchmarkConfig
from edgeopt.eval.coco_map import coco_map
from edgeopt.eval.predict import eval_decoder, predict, torch_infer
from edgeopt.models.decode import DecoderConfig


def bench_artifact(target, device, bundle: Path, manifest: dict, cfg: BenchmarkConfig, validation,
                   out_dir: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Latency/RSS via the bundle's runner on ``device``; mAP in-process through the same runner code."""
    timing = device.bench(bundle, cfg.threads, cfg.warmup, cfg.runs)
    record: dict[str, Any] = {**timing}
    if cfg.map and validation is not None:
        session = target.open(bundle, manifest, cfg.threads)
        decoder = eval_decoder(DecoderConfig(**manifest["output"]["decoder"]))
        dets = predict(lambda x: session(x)[0], validation, manifest["input"]["size"], decoder, progress=progress)
        metrics = coco_map(validation, dets)
        record.update(map50_95=metrics["map50_95"], map50=metrics["map50"], per_class=metrics["per_class"])
    (out_dir / "bench.json").write_text(json.dumps(record, indent=2))
    return record


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch at ``threads`` intra-op threads inside the block, restoring the previous count after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def latency_ms(infer: Callable[[np.ndarray], Any], size: int, warmup: int, runs: int) -> np.ndarray:
    """Milliseconds per call of ``infer`` on one grey ``size`` x ``size`` image."""
    x = np.full((1, 3, size, size), 114 / 255.0, np.float32)
    for _ in range(warmup):
        infer(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return np.asarray(times)


def torch_latency_ms(module, size: int, threads: int, warmup: int, runs: int) -> np.ndarray:
    """Milliseconds per call of a torch module on one grey ``size`` x ``size`` image, at ``threads`` threads."""
    with torch_threads(threads):
        return latency_ms(torch_infer(module), size, warmup, runs)


def bench_reference(detector, cfg: BenchmarkConfig, validation, out_dir: Path,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The fp32 reference (PyTorch; ONNX Runtime for an ONNX source): mAP through the shared decoder and
    in-process latency at the same threads."""
    if detector.module is None:
        from edgeopt.models.onnx_source import onnx_infer

        t = latency_ms(onnx_infer(detector.onnx_model, cfg.threads), detector.input_size, cfg.warmup, cfg.runs)
    else:
        t = torch_latency_ms(detector.module, detector.input_size, cfg.threads, cfg.warmup, cfg.runs)
    record: dict[str, Any] = {"latency_ms_median": float(np.median(t)), "latency_ms_p90": float(np.percentile(t, 90)),
                              "latency_ms_min": float(t.min()), "threads": cfg.threads, "runs": cfg.runs}
    if validation is not None:
        with torch_threads(cfg.threads):
            metrics = coco_map(validation, predict(detector.infer(), validation, detector.input_size,
                                                   eval_decoder(detector.decoder), batch=8, progress=progress))
        record.update(map50_95=metrics["map50_95"], map50=metrics["map50"], per_class=metrics["per_class"])
    (out_dir / "bench.json").write_text(json.dumps(record, indent=2))
    return record
