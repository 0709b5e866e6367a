"""The command line of a bundle's ``run.py``: detections for an image, or a latency/memory benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .bench import latency_stats, peak_rss_mb, time_calls
from .decode import DecoderConfig, decode, eval_decoder
from .integrity import changed_files
from .letterbox import letterbox_image, to_tensor

HERE = Path(__file__).resolve().parent.parent  # the bundle directory (this file is edgeopt_bundle/main.py there)


class BundleError(Exception):
    """The bundle cannot be used as it is (printed in one line, exit code 2)."""


# The manifest entries run.py reads (dotted path -> expected type): checked once on load, so a hand-edited or
# truncated edgeopt.json is one line naming the entry, not a KeyError deep in the decoder.
REQUIRED: dict[str, type] = {
    "input": dict, "input.size": int, "input.layout": str, "input.dtype": str,
    "output": dict, "output.decoder": dict, "class_names": list, "model_files": list, "files": dict,
    "runtime": dict,
}


def _entry(manifest: dict, dotted: str) -> object:
    """The value at a dotted path of the manifest (KeyError/TypeError when it is missing)."""
    value: object = manifest
    for key in dotted.split("."):
        value = value[key]  # type: ignore[index]
    return value


def _checked(manifest: object) -> dict:
    """``manifest`` if it holds every entry run.py reads, with the right type; a BundleError naming the first
    entry that is missing or of another type."""
    where = HERE / "edgeopt.json"
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} is not a JSON object")
    for dotted, kind in REQUIRED.items():
        try:
            value = _entry(manifest, dotted)
        except (KeyError, TypeError):
            raise BundleError(f"{where} lacks the entry '{dotted}' (the file is not a complete edgeopt manifest)") \
                from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(f"{where}: '{dotted}' should be a {kind.__name__}, "
                              f"not {type(value).__name__}")
    return manifest


def _manifest() -> dict:
    try:
        manifest = json.loads((HERE / "edgeopt.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {HERE / 'edgeopt.json'}: {exc}") from None
    return _checked(manifest)


def _verified(manifest: dict, verify: bool) -> dict:
    changed = changed_files(HERE, manifest.get("files", {})) if verify else []
    if changed:
        raise BundleError(f"refusing to load: {', '.join(changed)} differ(s) from edgeopt.json "
                          "(use --no-verify to run it anyway)")
    return manifest


def _session(manifest: dict, threads: int):
    from .runner import load_session  # the target's runner, copied in beside this file

    files = ", ".join(str(HERE / name) for name in manifest["model_files"])
    try:
        return load_session(HERE, manifest, threads)
    except ImportError as exc:
        raise BundleError(f"the runtime this bundle needs is not installed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types for a corrupt or unreadable model
        lines = str(exc).strip().splitlines()
        raise BundleError(f"cannot load the model {files}: {type(exc).__name__}: {lines[0] if lines else ''}") \
            from None


def _decoder(manifest: dict, score: float | None) -> DecoderConfig:
    cfg = dict(manifest["output"]["decoder"])
    if score is not None:
        cfg["score_threshold"] = score
    try:
        return DecoderConfig(**cfg)
    except TypeError as exc:  # an entry the decoder does not know: the manifest was edited or is from elsewhere
        raise BundleError(f"{HERE / 'edgeopt.json'}: bad 'output.decoder': {exc}") from None


def model_input(manifest: dict, hwc: np.ndarray) -> np.ndarray:
    """The model input for an RGB uint8 HWC image: layout and dtype from the manifest (uint8 = raw pixels)."""
    spec = manifest["input"]
    return to_tensor(hwc, spec["layout"], "uint8" if spec["dtype"] in ("uint8", "int8") else "float32")


def _image(path: str, size: int):
    try:
        with Image.open(path) as im:
            return letterbox_image(im, size)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the image {path}: {exc}") from None


def detect(image_path: str, threads: int = 1, score: float | None = None, verify: bool = True) -> list[dict]:
    """Detections for one image, in original-image pixels."""
    manifest = _verified(_manifest(), verify)
    decoder = _decoder(manifest, score)  # before the model loads: a bad manifest is named first
    hwc, lb = _image(image_path, manifest["input"]["size"])
    run = _session(manifest, threads)
    out = run(model_input(manifest, hwc))[0]
    det = decode(out, manifest["input"]["size"], decoder)
    boxes = lb.to_original(det.boxes)
    names = manifest["class_names"]
    return [{"class": names[int(c)], "class_id": int(c), "score": round(float(s), 4),
             "box": [round(float(v), 1) for v in b]} for b, s, c in zip(boxes, det.scores, det.classes)]


def detect_for_map(image_paths: list[str], threads: int = 1, verify: bool = True):
    """Yield, per image, the detections at mAP settings (score >= 0.001, up to 300, unrounded) in
    original-image pixels: what edgeopt scores on the host when it measures mAP on a device."""
    manifest = _verified(_manifest(), verify)
    decoder = eval_decoder(_decoder(manifest, None))
    size = manifest["input"]["size"]
    run = _session(manifest, threads)
    for path in image_paths:
        hwc, lb = _image(path, size)
        det = decode(run(model_input(manifest, hwc))[0], size, decoder)
        yield {"image": path, "boxes": lb.to_original(det.boxes).tolist(), "scores": det.scores.tolist(),
               "classes": det.classes.astype(int).tolist()}


def _bench_input(manifest: dict, image: str | None) -> np.ndarray:
    """The model input timed: the image given, or a plain grey (letterbox padding colour) frame."""
    size = manifest["input"]["size"]
    hwc = _image(image, size)[0] if image else np.full((size, size, 3), 114, np.uint8)
    return model_input(manifest, hwc)


def bench(threads: int, warmup: int, runs: int, image: str | None, verify: bool = True) -> dict:
    """Latency over ``runs`` timed runs after ``warmup``, and the process's peak RSS."""
    manifest = _verified(_manifest(), verify)
    rss_before = peak_rss_mb()
    run = _session(manifest, threads)
    x = _bench_input(manifest, image)
    times = time_calls(lambda: run(x), warmup, runs)
    return {**latency_stats(times), "runs": runs, "warmup": warmup, "threads": threads,
            "peak_rss_mb": peak_rss_mb(), "rss_before_load_mb": rss_before}


def profile(threads: int, warmup: int, runs: int, image: str | None, verify: bool = True) -> dict:
    """``bench``'s figures (timed first, without the profiler's overhead), then per-operator milliseconds per
    inference from the runtime's own profiler (``ops``), or why this runtime offers none (``unavailable``)."""
    figures = bench(threads, warmup, runs, image, verify)  # verifies the files before anything loads
    manifest = _manifest()
    from . import runner  # the target's runner, copied in beside this file

    if not hasattr(runner, "profile"):
        return {**figures, "profile": {"unavailable": "this runtime's runner has no profiler"}}
    try:
        ops = runner.profile(HERE, manifest, threads, _bench_input(manifest, image), warmup, runs)
    except NotImplementedError as exc:  # the runtime offers no per-operator timing (the reason is its message)
        return {**figures, "profile": {"unavailable": str(exc)}}
    except ImportError as exc:
        return {**figures, "profile": {"unavailable": f"the profiler needs a package not installed: {exc}"}}
    return {**figures, "profile": {"ops": ops}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run this edgeopt bundle: detections for an image, or a benchmark.")
    parser.add_argument("image", nargs="*", help="image file(s) to detect objects in")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--score", type=float, default=None, help="score threshold (default from edgeopt.json)")
    parser.add_argument("--json", action="store_true", help="print detections as JSON")
    parser.add_argument("--bench", action="store_true", help="measure latency and peak memory, print JSON")
    parser.add_argument("--eval", action="store_true",
                        help="detections at mAP settings for every image, one JSON line each (for scoring elsewhere)")
    parser.add_argument("--profile", action="store_true",
                        help="with --bench: also per-operator times from the runtime's own profiler (in the JSON)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-verify", action="store_true",
                        help="run even if files differ from the sha256 recorded in edgeopt.json")
    args = parser.parse_args(argv)
    if not args.bench and not args.image:
        parser.error("give an image (or --bench)")
    if len(args.image) > 1 and not args.eval:
        parser.error("give one image (or --eval for several)")
    try:
        if args.bench:
            image = args.image[0] if args.image else None
            measure = profile if args.profile else bench
            print(json.dumps(measure(args.threads, args.warmup, args.runs, image, not args.no_verify)))
            return 0
        if args.eval:
            for record in detect_for_map(args.image, args.threads, not args.no_verify):
                print(json.dumps(record), flush=True)
            return 0
        dets = detect(args.image[0], args.threads, args.score, not args.no_verify)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(dets))
    else:
        for d in dets:
            print(f"{d['class']:>12s} {d['score']:.3f}  box {d['box']}")
        print(f"{len(dets)} detections")
    return 0
