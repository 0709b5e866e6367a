"""export: realise the quantization plan on the final graph with each runtime's own tools, and gate on parity.

Each (target, precision) becomes a self-contained bundle directory. The bundle is checked against the PyTorch
reference before it counts: a bundle outside the parity tolerance is kept in the cache for inspection but
marked failed, and never copied to the run's ``artifacts/``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from edgeopt.config.schema import ParityConfig
from edgeopt.core.artifact import FORMAT, build_runner, write_manifest
from edgeopt.data.letterbox import PAD_VALUE
from edgeopt.eval.parity import DEPLOY_DECODER, parity
from edgeopt.errors import ExportError
from edgeopt.targets.base import captured_output, log_tail


LAYOUTS = {"dense": "(1, 4 + C, N): cx, cy, w, h divided by the input size, then class scores",
           "end2end": "(1, K, 6): x1, y1, x2, y2 divided by the input size, score, class id (ranked, no NMS needed)"}


def export_bundle(target, detector, precision: str, plan, calib, out_dir: Path, options: dict[str, Any],
                  parity_cfg: ParityConfig, lineage: dict[str, Any], head: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Export, write ``run.py`` and the manifest, run the parity check; returns the manifest.

    ``head``: which head of the model was exported and why (recorded in the manifest)."""
    target.check_precision(precision)
    with captured_output() as log:  # converters' chatter; quoted only when they fail
        try:
            details = target.export(detector, precision, plan, calib, out_dir, options)
        except ExportError as exc:
            tail = log_tail(log)
            raise ExportError(exc.message + (f" (converter output: {tail})" if tail else ""), exc.hint) from None
        finally:
            log.unlink(missing_ok=True)
    (out_dir / "run.py").write_text(build_runner(target.runner))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "target": target.name,
        "precision": precision,
        "model_files": details["model_files"],
        "input": {"size": detector.input_size, "layout": "NCHW", "dtype": "float32", "color": "RGB",
                  "scale": 1 / 255.0, "letterbox": {"keep_aspect": True, "center": True, "pad_value": PAD_VALUE},
                  **details.get("input", {})},
        "output": {"layout": LAYOUTS[detector.decoder.layout],
                   "decoder": asdict(detector.decoder),
                   **({"tensor": details["output_tensor"]} if "output_tensor" in details else {})},
        "class_names": detector.class_names,
        **({"head": head} if head else {}),
        "quantization": details.get("quantization"),
        "runtime": {"versions": target.versions(), **details.get("runtime", {})},
        **({"ncnn": details["ncnn"]} if "ncnn" in details else {}),
        "lineage": lineage,
    }
    write_manifest(out_dir, manifest)
    session = target.open(out_dir, manifest, threads=1)
    figures = parity(detector.infer(), lambda x: session(x)[0], calib.float_images("parity"), detector.input_size,
                     replace(detector.decoder, score_threshold=DEPLOY_DECODER.score_threshold),
                     margin=parity_cfg.score_margin)
    tol = {"score_margin": parity_cfg.score_margin, "min_cosine": parity_cfg.min_cosine.get(precision, 0.0),
           "min_box_agreement": parity_cfg.min_box_agreement.get(precision, 0.0),
           "max_abs": parity_cfg.max_abs.get(precision, float("inf"))}
    problems = []
    if figures["cosine"] < tol["min_cosine"]:
        problems.append(f"cosine {figures['cosine']:.5f} < {tol['min_cosine']}")
    if figures["box_agreement"] < tol["min_box_agreement"]:
        problems.append(f"box agreement {figures['box_agreement']:.3f} < {tol['min_box_agreement']}")
    if figures["max_abs"] > tol["max_abs"]:
        problems.append(f"max abs error {figures['max_abs']:.4g} > {tol['max_abs']}")
    manifest["parity"] = {**figures, "tolerance": tol, "passed": not problems, "problems": problems}
    return write_manifest(out_dir, manifest)
