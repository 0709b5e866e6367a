"""Side by side, in one run: edgeopt's ONNX Runtime artifacts vs the plain baseline a user would otherwise make.

Baseline: ``torch.onnx.export`` with its defaults (fp32) loaded in an ONNX Runtime session with default options
(only the thread count pinned, so every row runs at the same number of threads). edgeopt: the fp32 and int8
bundles of ``configs/default.yaml`` (the pipeline is run first; cached stages are reused).

Latencies are measured interleaved (round-robin blocks), so machine noise hits every row alike; mAP uses the
same validation set and the shared decoder for every row. Prints a table and the ratios.

    python benchmarks/ort_int8_vs_baseline.py [--threads 1] [--rounds 5] [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import add_timing_args, time_interleaved

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    add_timing_args(parser)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    import edgeopt
    from edgeopt.eval.coco_map import coco_map
    from edgeopt.eval.predict import predict
    from edgeopt.models.sources.reference.checkpoint import load_detector
    from edgeopt.data.open import open_dataset

    config = edgeopt.load_config(args.config, [f"benchmark.threads={args.threads}"])
    result = edgeopt.run(config)
    rows = {r["precision"]: r for r in result.records if r["target"] == "onnxruntime" and r["status"] == "passed"}

    model = load_detector().eval()
    size = config.model.input_size
    with tempfile.TemporaryDirectory() as tmp:
        baseline_path = Path(tmp) / "baseline.onnx"
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(baseline_path))  # the user's default call
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sessions = {"baseline fp32 (torch.onnx.export + default ORT)": ort.InferenceSession(str(baseline_path), opts)}

        def runner(session):
            name = session.get_inputs()[0].name
            return lambda x: session.run(None, {name: x})[0]

        runs = {k: runner(s) for k, s in sessions.items()}
        for precision in ("fp32", "int8"):
            bundle = Path(rows[precision]["artifact"])
            manifest = json.loads((bundle / "edgeopt.json").read_text())
            from edgeopt.targets.onnxruntime.runner import load_session

            session = load_session(bundle, manifest, args.threads)
            runs[f"edgeopt onnxruntime {precision}"] = lambda x, s=session: s(x)[0]

        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        times = time_interleaved(runs, x, args.rounds, args.runs)
        validation = open_dataset(config.data.validation)
        maps = {name: coco_map(validation, predict(run, validation, size)) for name, run in runs.items()}

    base_name = next(iter(runs))
    print(f"\nONNX Runtime at {args.threads} thread(s), {len(validation)} validation images, "
          f"{args.rounds}x{args.runs} timed runs per row")
    print(f"{'row':52s} {'median ms':>10s} {'p90 ms':>8s} {'mAP50-95':>9s} {'mAP50':>7s}")
    for name, t in times.items():
        print(f"{name:52s} {np.median(t):10.2f} {np.percentile(t, 90):8.2f} {maps[name]['map50_95']:9.4f} "
              f"{maps[name]['map50']:7.4f}")
    int8, fp32 = times["edgeopt onnxruntime int8"], times["edgeopt onnxruntime fp32"]
    print(f"\nratio int8 / edgeopt fp32 median latency: {np.median(int8) / np.median(fp32):.3f}")
    print(f"ratio int8 / baseline fp32 median latency: {np.median(int8) / np.median(times[base_name]):.3f}")
    drop = maps["edgeopt onnxruntime fp32"]["map50_95"] - maps["edgeopt onnxruntime int8"]["map50_95"]
    print(f"int8 mAP50-95 drop vs fp32: {drop * 100:.2f} points")


if __name__ == "__main__":
    main()
